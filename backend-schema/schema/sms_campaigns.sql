CREATE TABLE sms_campaigns (
    id               uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    assessment_id    uuid NOT NULL,
    qr_code_id       uuid,
    created_by       uuid NOT NULL,
    name             character varying(255) NOT NULL,
    message_template text NOT NULL,
    recipients       jsonb NOT NULL,
    total_recipients integer DEFAULT 0 NOT NULL,
    sent_count       integer DEFAULT 0 NOT NULL,
    delivered_count  integer DEFAULT 0 NOT NULL,
    failed_count     integer DEFAULT 0 NOT NULL,
    status           smsstatus DEFAULT 'pending'::smsstatus NOT NULL,
    scheduled_at     timestamp with time zone,
    sent_at          timestamp with time zone,
    created_at       timestamp with time zone DEFAULT now() NOT NULL,
    updated_at       timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sms_campaigns_pkey PRIMARY KEY (id),
    CONSTRAINT sms_campaigns_assessment_id_fkey FOREIGN KEY (assessment_id) REFERENCES assessments(id) ON DELETE CASCADE,
    CONSTRAINT sms_campaigns_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id) ON DELETE CASCADE,
    CONSTRAINT sms_campaigns_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE INDEX idx_sms_campaigns_assessment_id ON sms_campaigns USING btree (assessment_id);
CREATE INDEX idx_sms_campaigns_created_at ON sms_campaigns USING btree (created_at);
CREATE INDEX idx_sms_campaigns_qr_code_id ON sms_campaigns USING btree (qr_code_id);
CREATE INDEX idx_sms_campaigns_status ON sms_campaigns USING btree (status);
CREATE INDEX idx_sms_campaigns_tenant_id ON sms_campaigns USING btree (tenant_id);
