-- The application sets app.current_tenant_id per transaction (set_config(..., true)).
-- Without FORCE ROW LEVEL SECURITY the table owner and superusers bypass these policies.
ALTER TABLE assessments ENABLE ROW LEVEL SECURITY;

CREATE POLICY assessment_tenant_isolation ON assessments
    FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id')::uuid)
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id')::uuid);

ALTER TABLE leads ENABLE ROW LEVEL SECURITY;

CREATE POLICY lead_tenant_isolation ON leads
    FOR ALL
    USING (tenant_id = current_setting('app.current_tenant_id')::uuid)
    WITH CHECK (tenant_id = current_setting('app.current_tenant_id')::uuid);
