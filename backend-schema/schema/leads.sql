CREATE TABLE leads (
    id                uuid NOT NULL,
    tenant_id         uuid NOT NULL,
    name              character varying(255) NOT NULL,
    email             character varying(255) NOT NULL,
    company           character varying(255),
    job_title         character varying(100),
    phone             character varying(20),
    status            character varying(50) NOT NULL,
    score             integer NOT NULL,
    last_contacted_at timestamp with time zone,
    last_activity_at  timestamp with time zone,
    notes             text,
    tags              json NOT NULL,
    custom_fields     json NOT NULL,
    created_by        uuid NOT NULL,
    updated_by        uuid,
    assigned_to       uuid,
    created_at        timestamp with time zone DEFAULT now() NOT NULL,
    updated_at        timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT leads_pkey PRIMARY KEY (id),
    CONSTRAINT uq_leads_tenant_email UNIQUE (tenant_id, email),
    CONSTRAINT leads_assigned_to_fkey FOREIGN KEY (assigned_to) REFERENCES users(id),
    CONSTRAINT leads_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id),
    CONSTRAINT leads_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE,
    CONSTRAINT leads_updated_by_fkey FOREIGN KEY (updated_by) REFERENCES users(id)
);

CREATE INDEX idx_leads_assigned_to ON leads USING btree (assigned_to);
CREATE INDEX idx_leads_tenant_score ON leads USING btree (tenant_id, score);
CREATE INDEX idx_leads_tenant_status ON leads USING btree (tenant_id, status);

ALTER TABLE leads ENABLE ROW LEVEL SECURITY;

CREATE POLICY lead_tenant_isolation ON leads
    USING (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid)
    WITH CHECK (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid);
