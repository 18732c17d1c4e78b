-- A device's view (GET /devices/{id}/activity, cityvitals devices show) counts and lists the
-- messages naming the device that a stage refused lately, without reading every dead letter.

CREATE INDEX deadletters_device ON deadletters (device_id, received_at) WHERE device_id IS NOT NULL;
