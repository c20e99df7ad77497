CREATE TABLE ab_test_variants (
    id                         uuid NOT NULL,
    ab_test_id                 uuid NOT NULL,
    tenant_id                  uuid NOT NULL,
    name                       character varying(50) NOT NULL,
    description                text,
    is_control                 boolean DEFAULT false NOT NULL,
    config                     jsonb DEFAULT '{}'::jsonb NOT NULL,
    impressions                integer DEFAULT 0 NOT NULL,
    conversions                integer DEFAULT 0 NOT NULL,
    conversion_rate            double precision DEFAULT 0.0 NOT NULL,
    alpha                      double precision DEFAULT 1.0 NOT NULL,
    beta                       double precision DEFAULT 1.0 NOT NULL,
    thompson_score             double precision DEFAULT 0.0 NOT NULL,
    current_traffic_allocation double precision DEFAULT 0.0 NOT NULL,
    confidence_interval_lower  double precision DEFAULT 0.0 NOT NULL,
    confidence_interval_upper  double precision DEFAULT 1.0 NOT NULL,
    created_at                 timestamp with time zone DEFAULT now() NOT NULL,
    updated_at                 timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT ab_test_variants_pkey PRIMARY KEY (id),
    CONSTRAINT ab_test_variants_ab_test_id_fkey FOREIGN KEY (ab_test_id) REFERENCES ab_tests(id) ON DELETE CASCADE,
    CONSTRAINT ab_test_variants_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE INDEX idx_ab_test_variants_ab_test_id ON ab_test_variants USING btree (ab_test_id);
CREATE INDEX idx_ab_test_variants_tenant_id ON ab_test_variants USING btree (tenant_id);
