-- Why a resolved episode ended (cleared, stale, retired), as its last transition says: an
-- incident whose alert ended because its sensor fell silent is not verified by its sensors.
-- Episodes stored before have none.

ALTER TABLE alerts ADD COLUMN resolution text
    CHECK (resolution IN ('cleared', 'stale', 'retired'));
