CREATE TYPE abteststatus AS ENUM ('draft', 'running', 'paused', 'completed', 'archived');

CREATE TYPE abtesttype AS ENUM ('question_order', 'cta_text', 'cta_color', 'intro_text', 'custom');

-- winner_variant_id has no foreign key: the variants table references this one.
CREATE TABLE ab_tests (
    id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    assessment_id UUID NOT NULL,
    created_by UUID NOT NULL,
    name VARCHAR(255) NOT NULL,
    description TEXT,
    test_type abtesttype DEFAULT 'custom' NOT NULL,
    traffic_allocation DOUBLE PRECISION DEFAULT 1.0 NOT NULL,
    min_sample_size INTEGER DEFAULT 100 NOT NULL,
    confidence_threshold DOUBLE PRECISION DEFAULT 0.95 NOT NULL,
    exploration_rate DOUBLE PRECISION DEFAULT 0.1 NOT NULL,
    status abteststatus DEFAULT 'draft' NOT NULL,
    total_impressions INTEGER DEFAULT 0 NOT NULL,
    total_conversions INTEGER DEFAULT 0 NOT NULL,
    overall_conversion_rate DOUBLE PRECISION DEFAULT 0.0 NOT NULL,
    winner_variant_id UUID,
    started_at TIMESTAMP WITH TIME ZONE,
    completed_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    FOREIGN KEY (assessment_id) REFERENCES assessments (id) ON DELETE CASCADE,
    FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX idx_ab_tests_tenant_id ON ab_tests (tenant_id);

CREATE INDEX idx_ab_tests_assessment_id ON ab_tests (assessment_id);

CREATE INDEX idx_ab_tests_status ON ab_tests (status);

CREATE INDEX idx_ab_tests_created_at ON ab_tests (created_at);

CREATE TABLE ab_test_variants (
    id UUID NOT NULL,
    ab_test_id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    name VARCHAR(50) NOT NULL,
    description TEXT,
    is_control BOOLEAN DEFAULT false NOT NULL,
    config JSONB DEFAULT '{}' NOT NULL,
    impressions INTEGER DEFAULT 0 NOT NULL,
    conversions INTEGER DEFAULT 0 NOT NULL,
    conversion_rate DOUBLE PRECISION DEFAULT 0.0 NOT NULL,
    alpha DOUBLE PRECISION DEFAULT 1.0 NOT NULL,
    beta DOUBLE PRECISION DEFAULT 1.0 NOT NULL,
    thompson_score DOUBLE PRECISION DEFAULT 0.0 NOT NULL,
    current_traffic_allocation DOUBLE PRECISION DEFAULT 0.0 NOT NULL,
    confidence_interval_lower DOUBLE PRECISION DEFAULT 0.0 NOT NULL,
    confidence_interval_upper DOUBLE PRECISION DEFAULT 1.0 NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (ab_test_id) REFERENCES ab_tests (id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE INDEX idx_ab_test_variants_ab_test_id ON ab_test_variants (ab_test_id);

CREATE INDEX idx_ab_test_variants_tenant_id ON ab_test_variants (tenant_id);
