CREATE TABLE ab_tests (
    id                      uuid NOT NULL,
    tenant_id               uuid NOT NULL,
    assessment_id           uuid NOT NULL,
    created_by              uuid NOT NULL,
    name                    character varying(255) NOT NULL,
    description             text,
    test_type               abtesttype DEFAULT 'custom'::abtesttype NOT NULL,
    traffic_allocation      double precision DEFAULT 1.0 NOT NULL,
    min_sample_size         integer DEFAULT 100 NOT NULL,
    confidence_threshold    double precision DEFAULT 0.95 NOT NULL,
    exploration_rate        double precision DEFAULT 0.1 NOT NULL,
    status                  abteststatus DEFAULT 'draft'::abteststatus NOT NULL,
    total_impressions       integer DEFAULT 0 NOT NULL,
    total_conversions       integer DEFAULT 0 NOT NULL,
    overall_conversion_rate double precision DEFAULT 0.0 NOT NULL,
    winner_variant_id       uuid,
    started_at              timestamp with time zone,
    completed_at            timestamp with time zone,
    created_at              timestamp with time zone DEFAULT now() NOT NULL,
    updated_at              timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ab_tests_pkey PRIMARY KEY (id),
    CONSTRAINT ab_tests_assessment_id_fkey FOREIGN KEY (assessment_id) REFERENCES assessments(id) ON DELETE CASCADE,
    CONSTRAINT ab_tests_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id) ON DELETE CASCADE,
    CONSTRAINT ab_tests_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE INDEX idx_ab_tests_assessment_id ON ab_tests USING btree (assessment_id);
CREATE INDEX idx_ab_tests_created_at ON ab_tests USING btree (created_at);
CREATE INDEX idx_ab_tests_status ON ab_tests USING btree (status);
CREATE INDEX idx_ab_tests_tenant_id ON ab_tests USING btree (tenant_id);
