CREATE TABLE assessments (
    id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    title VARCHAR(255) NOT NULL,
    description TEXT,
    status VARCHAR(50) NOT NULL,
    topic VARCHAR(255),
    industry VARCHAR(100),
    ai_generated VARCHAR(50) NOT NULL,
    scoring_logic JSON NOT NULL,
    created_by UUID NOT NULL,
    updated_by UUID,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    FOREIGN KEY (created_by) REFERENCES users (id),
    FOREIGN KEY (updated_by) REFERENCES users (id)
);

CREATE INDEX idx_assessments_created_by ON assessments (created_by);

CREATE INDEX idx_assessments_tenant_status ON assessments (tenant_id, status);
