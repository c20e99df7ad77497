DROP INDEX idx_sms_messages_twilio_sid;

DROP INDEX idx_sms_messages_status;

DROP INDEX idx_sms_messages_tenant_id;

DROP INDEX idx_sms_messages_campaign_id;

DROP TABLE sms_messages;

DROP INDEX idx_sms_campaigns_created_at;

DROP INDEX idx_sms_campaigns_status;

DROP INDEX idx_sms_campaigns_qr_code_id;

DROP INDEX idx_sms_campaigns_assessment_id;

DROP INDEX idx_sms_campaigns_tenant_id;

DROP TABLE sms_campaigns;

DROP TYPE smsstatus;
