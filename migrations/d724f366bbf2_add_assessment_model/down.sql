DROP INDEX idx_assessments_tenant_status;

DROP INDEX idx_assessments_created_by;

DROP TABLE assessments;
