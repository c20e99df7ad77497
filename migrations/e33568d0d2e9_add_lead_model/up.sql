CREATE TABLE leads (
    id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    name VARCHAR(255) NOT NULL,
    email VARCHAR(255) NOT NULL,
    company VARCHAR(255),
    job_title VARCHAR(100),
    phone VARCHAR(20),
    status VARCHAR(50) NOT NULL,
    score INTEGER NOT NULL,
    last_contacted_at TIMESTAMP WITH TIME ZONE,
    last_activity_at TIMESTAMP WITH TIME ZONE,
    notes TEXT,
    tags JSON NOT NULL,
    custom_fields JSON NOT NULL,
    created_by UUID NOT NULL,
    updated_by UUID,
    assigned_to UUID,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    FOREIGN KEY (created_by) REFERENCES users (id),
    FOREIGN KEY (updated_by) REFERENCES users (id),
    FOREIGN KEY (assigned_to) REFERENCES users (id),
    CONSTRAINT uq_leads_tenant_email UNIQUE (tenant_id, email)
);

CREATE INDEX idx_leads_assigned_to ON leads (assigned_to);

CREATE INDEX idx_leads_tenant_score ON leads (tenant_id, score);

CREATE INDEX idx_leads_tenant_status ON leads (tenant_id, status);
