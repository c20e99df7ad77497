-- Each enum is created once, here, and the tables only use it (spec defect 3).
CREATE TYPE smsstatus AS ENUM ('pending', 'sent', 'delivered', 'failed', 'undelivered');

-- qr_code_id has no foreign key: no revision creates qr_codes (spec defect 2).
CREATE TABLE sms_campaigns (
    id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    assessment_id UUID NOT NULL,
    qr_code_id UUID,
    created_by UUID NOT NULL,
    name VARCHAR(255) NOT NULL,
    message_template TEXT NOT NULL,
    recipients JSONB NOT NULL,
    total_recipients INTEGER DEFAULT 0 NOT NULL,
    sent_count INTEGER DEFAULT 0 NOT NULL,
    delivered_count INTEGER DEFAULT 0 NOT NULL,
    failed_count INTEGER DEFAULT 0 NOT NULL,
    status smsstatus DEFAULT 'pending' NOT NULL,
    scheduled_at TIMESTAMP WITH TIME ZONE,
    sent_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    FOREIGN KEY (assessment_id) REFERENCES assessments (id) ON DELETE CASCADE,
    FOREIGN KEY (created_by) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX idx_sms_campaigns_tenant_id ON sms_campaigns (tenant_id);

CREATE INDEX idx_sms_campaigns_assessment_id ON sms_campaigns (assessment_id);

CREATE INDEX idx_sms_campaigns_qr_code_id ON sms_campaigns (qr_code_id);

CREATE INDEX idx_sms_campaigns_status ON sms_campaigns (status);

CREATE INDEX idx_sms_campaigns_created_at ON sms_campaigns (created_at);

CREATE TABLE sms_messages (
    id UUID NOT NULL,
    campaign_id UUID NOT NULL,
    tenant_id UUID NOT NULL,
    phone_number VARCHAR(20) NOT NULL,
    message_text TEXT NOT NULL,
    twilio_sid VARCHAR(34),
    status smsstatus DEFAULT 'pending' NOT NULL,
    error_message TEXT,
    sent_at TIMESTAMP WITH TIME ZONE,
    delivered_at TIMESTAMP WITH TIME ZONE,
    clicked BOOLEAN DEFAULT false NOT NULL,
    clicked_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY (campaign_id) REFERENCES sms_campaigns (id) ON DELETE CASCADE,
    FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE
);

CREATE INDEX idx_sms_messages_campaign_id ON sms_messages (campaign_id);

CREATE INDEX idx_sms_messages_tenant_id ON sms_messages (tenant_id);

CREATE INDEX idx_sms_messages_status ON sms_messages (status);

CREATE INDEX idx_sms_messages_twilio_sid ON sms_messages (twilio_sid);
