DROP POLICY lead_tenant_isolation ON leads;

ALTER TABLE leads DISABLE ROW LEVEL SECURITY;

DROP POLICY assessment_tenant_isolation ON assessments;

ALTER TABLE assessments DISABLE ROW LEVEL SECURITY;
