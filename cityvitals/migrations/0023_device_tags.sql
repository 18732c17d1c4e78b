-- A device's tags are bounded now (cityvitals.contracts.places.Tag): 32 at most, each 1 to 64
-- characters with no ';' nor control character. Tags stored before are brought within it,
-- so every stored device still reads as one: ';' and control characters become spaces, an
-- empty tag goes, a long one is cut, and the first 32 stay.

UPDATE devices SET tags = ARRAY(
    SELECT left(regexp_replace(t, '[;[:cntrl:]]', ' ', 'g'), 64)
    FROM unnest(tags) WITH ORDINALITY AS u(t, n)
    WHERE t <> ''
    ORDER BY n
    LIMIT 32
)
WHERE cardinality(tags) > 32
   OR EXISTS (SELECT 1 FROM unnest(tags) AS u(t) WHERE t = '' OR length(t) > 64 OR t ~ '[;[:cntrl:]]');
