DROP INDEX idx_ab_test_variants_tenant_id;

DROP INDEX idx_ab_test_variants_ab_test_id;

DROP TABLE ab_test_variants;

DROP INDEX idx_ab_tests_created_at;

DROP INDEX idx_ab_tests_status;

DROP INDEX idx_ab_tests_assessment_id;

DROP INDEX idx_ab_tests_tenant_id;

DROP TABLE ab_tests;

DROP TYPE abtesttype;

DROP TYPE abteststatus;
