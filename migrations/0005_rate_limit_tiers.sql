-- Per-user rate-limit tiers: an administrator can raise a legitimate heavy
-- user's limits for authenticated reads and writes (multipliers in
-- src/rate_limit/policy.rs).
ALTER TABLE users
    ADD COLUMN rate_limit_tier text NOT NULL DEFAULT 'standard',
    ADD CONSTRAINT users_rate_limit_tier_valid CHECK (rate_limit_tier IN ('standard', 'raised', 'high'));
