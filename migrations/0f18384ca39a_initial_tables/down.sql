DROP INDEX idx_users_tenant_email;

DROP INDEX ix_users_email;

DROP TABLE users;

DROP INDEX ix_tenants_slug;

DROP TABLE tenants;
