-- The tenant a delivery verified for (ringyo_webhook::secrets::Tenants), NULL without tenants.
ALTER TABLE ringyo_inbox ADD COLUMN tenant TEXT;
