CREATE TABLE assessments (
    id            uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    title         character varying(255) NOT NULL,
    description   text,
    status        character varying(50) NOT NULL,
    topic         character varying(255),
    industry      character varying(100),
    ai_generated  character varying(50) NOT NULL,
    scoring_logic json NOT NULL,
    created_by    uuid NOT NULL,
    updated_by    uuid,
    created_at    timestamp with time zone DEFAULT now() NOT NULL,
    updated_at    timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT assessments_pkey PRIMARY KEY (id),
    CONSTRAINT assessments_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id),
    CONSTRAINT assessments_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE,
    CONSTRAINT assessments_updated_by_fkey FOREIGN KEY (updated_by) REFERENCES users(id)
);

CREATE INDEX idx_assessments_created_by ON assessments USING btree (created_by);
CREATE INDEX idx_assessments_tenant_status ON assessments USING btree (tenant_id, status);

ALTER TABLE assessments ENABLE ROW LEVEL SECURITY;

CREATE POLICY assessment_tenant_isolation ON assessments
    USING (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid)
    WITH CHECK (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid);
