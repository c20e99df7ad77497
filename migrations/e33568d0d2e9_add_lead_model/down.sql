DROP INDEX idx_leads_tenant_status;

DROP INDEX idx_leads_tenant_score;

DROP INDEX idx_leads_assigned_to;

DROP TABLE leads;
