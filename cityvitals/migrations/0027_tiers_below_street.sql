-- Incidents may be routed to the tiers below the street: a grid's centre (its grid officers)
-- and a building's (its management), the lowest tiers of the place tree, as the street,
-- district and city are (cityvitals.contracts.Tier).

ALTER TABLE incidents DROP CONSTRAINT IF EXISTS incidents_tier_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_tier_check
    CHECK (tier IN ('building', 'grid', 'street', 'district', 'city'));
ALTER TABLE dispatches DROP CONSTRAINT IF EXISTS dispatches_tier_check;
ALTER TABLE dispatches ADD CONSTRAINT dispatches_tier_check
    CHECK (tier IN ('building', 'grid', 'street', 'district', 'city'));
ALTER TABLE escalations DROP CONSTRAINT IF EXISTS escalations_from_tier_check;
ALTER TABLE escalations ADD CONSTRAINT escalations_from_tier_check
    CHECK (from_tier IN ('building', 'grid', 'street', 'district', 'city'));
ALTER TABLE escalations DROP CONSTRAINT IF EXISTS escalations_to_tier_check;
ALTER TABLE escalations ADD CONSTRAINT escalations_to_tier_check
    CHECK (to_tier IN ('building', 'grid', 'street', 'district', 'city'));
