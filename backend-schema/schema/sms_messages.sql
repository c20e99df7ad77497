CREATE TABLE sms_messages (
    id            uuid NOT NULL,
    campaign_id   uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    phone_number  character varying(20) NOT NULL,
    message_text  text NOT NULL,
    twilio_sid    character varying(34),
    status        smsstatus DEFAULT 'pending'::smsstatus NOT NULL,
    error_message text,
    sent_at       timestamp with time zone,
    delivered_at  timestamp with time zone,
    clicked       boolean DEFAULT false NOT NULL,
    clicked_at    timestamp with time zone,
    created_at    timestamp with time zone DEFAULT now() NOT NULL,
    updated_at    timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT sms_messages_pkey PRIMARY KEY (id),
    CONSTRAINT sms_messages_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES sms_campaigns(id) ON DELETE CASCADE,
    CONSTRAINT sms_messages_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE
);

CREATE INDEX idx_sms_messages_campaign_id ON sms_messages USING btree (campaign_id);
CREATE INDEX idx_sms_messages_status ON sms_messages USING btree (status);
CREATE INDEX idx_sms_messages_tenant_id ON sms_messages USING btree (tenant_id);
CREATE INDEX idx_sms_messages_twilio_sid ON sms_messages USING btree (twilio_sid);
