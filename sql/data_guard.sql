-- The restricted-data guard, gdprcrm.check_unrestricted(): card numbers
-- inside longer digit runs, and refusals whose messages show no digit of
-- the document.

-- The extension exists when this runs after setup; alone, create it.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS gdprcrm;
RESET client_min_messages;

-- The documents below hold card numbers.  A failing statement is written to
-- the server log with its text, so they are checked by a function that
-- catches the refusal: it returns the primary message, or only that one was
-- withheld when any message field (message, detail, hint, context) holds
-- four digits in a row, and whether one does.
CREATE FUNCTION pg_temp.guard(doc jsonb, OUT outcome text, OUT digits_shown boolean)
LANGUAGE plpgsql AS $$
DECLARE
    msg text;
    det text;
    hnt text;
    ctx text;
BEGIN
    PERFORM gdprcrm.check_unrestricted(doc, 'trait');
    outcome := 'accepted';
    digits_shown := false;
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    digits_shown := concat_ws(' ', msg, det, hnt, ctx) ~ '[0-9]{4}';
    outcome := CASE WHEN digits_shown THEN 'refused, message withheld' ELSE msg END;
END
$$;

-- A card number next to other digits (expiry date, security code, a
-- quantity) is found: besides the whole run of digits, every part of it
-- made of whole groups, 13 to 19 digits long and laid out as cards are
-- written (one group; fours, the last of one to four; 4-6-5; 4-6-4) is
-- tried, unless it starts inside a valid IBAN.  A string shaped like an
-- IBAN with wrong check digits is not one.
SELECT label, (pg_temp.guard(doc)).*
FROM (VALUES
    ('card and expiry', '"card 4290 8442 0425 3662 12/27"'::jsonb),
    ('card and code', '"5235-1262-9340-4447 123"'),
    ('card at the end of a run', '"12 4290 8442 0425 3662"'),
    ('card in the middle of a run', '"ref 77 4290-8442-0425-3662 99 1"'),
    ('card as a whole run', '"4290844204253662"'),
    ('13 digits between numbers', '"3 4222222222222 9"'),
    ('13 digits after a number', '"1 4222222222222"'),
    ('19 digits before a number', '"6212 3456 7890 1234 569 7"'),
    ('19 digits after a number', '"1 6212-3456-7890-1234-569"'),
    ('4-6-5 after a number', '"qty 2 3782 822463 10005"'),
    ('card after an IBAN', '"DE89 3704 0044 0532 0130 00 4111 1111 1111 1111"'),
    ('IBAN-shaped, wrong check digits', '"DE38 3466 1099 0695 8483 04"'),
    ('13 digit number', '{"n": 4222222222222}'),
    ('19 digit number', '{"n": 6212345678901234569}'),
    ('card with a fraction', '{"n": 4290844204253662.5}')
) AS t(label, doc);

-- A card number in a key, in a nested key or under array indexes: the
-- path shows neither the number nor any other digit of a key.
SELECT label, (pg_temp.guard(doc)).*
FROM (VALUES
    ('card as a key', '{"4290 8442 0425 3662": 1}'::jsonb),
    ('card and expiry in a key', '{"card 4290 8442 0425 3662 12/27": true}'),
    ('card in a nested key', '{"a": {"b": {"pay 5235-1262-9340-4447 123": 1}}}'),
    ('card in a key under arrays', '[{"a": [0, {"x 4290 8442 0425 3662 x": 1}]}]'),
    ('card under arrays', '[[1, {"x": ["4290 8442 0425 3662 12"]}]]'),
    ('digits in the path of a card', '{"acct 1234 5678": {"n": "4111 1111 1111 1111"}}'),
    ('special-category key with a card', '{"health 4290 8442 0425 3662": 1}'),
    ('card split over the path', '{"4290 8442": {"0425 3662": {"religion": true}}}'),
    ('card split over arrays and keys', '{"order 4290": [{"8442 0425": {"3662": {"medical": 1}}}]}'),
    ('digits in a plain key', '{"line2": {"medical": 1}}')
) AS t(label, doc);

-- The same in a DO block, printing only a boolean.  The document is in a
-- variable: the context of an error in PL/pgSQL quotes the statement, and
-- would quote a literal written into it.
DO $$
DECLARE
    doc jsonb := '{"health 4290 8442 0425 3662": 1}';
    msg text;
    det text;
    hnt text;
    ctx text;
BEGIN
    PERFORM gdprcrm.check_unrestricted(doc, 'trait');
    RAISE NOTICE 'accepted';
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    RAISE NOTICE 'refused, digits shown: %', concat_ws(' ', msg, det, hnt, ctx) ~ '[0-9]{4}';
END
$$;

-- Through a CHECK constraint, as on the CRM tables: the guard raises its
-- own error, so no "failing row" detail echoes the document.
CREATE TEMP TABLE guarded (traits jsonb CHECK (gdprcrm.check_unrestricted(traits, 'person trait')));
DO $$
DECLARE
    doc jsonb := '{"note 7 4290 8442 0425 3662 12": 1}';
    msg text;
    det text;
    hnt text;
    ctx text;
BEGIN
    INSERT INTO guarded VALUES (doc);
    RAISE NOTICE 'accepted';
EXCEPTION WHEN check_violation THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL,
                            hnt = PG_EXCEPTION_HINT, ctx = PG_EXCEPTION_CONTEXT;
    RAISE NOTICE 'refused, digits shown: %', concat_ws(' ', msg, det, hnt, ctx) ~ '[0-9]{4}';
END
$$;
SELECT count(*) AS stored FROM guarded;

-- Ordinary numbers still pass: timestamps (they start with 1), short
-- numbers side by side, phone numbers, dates, and a 20 digit order id.
-- Windows are not tried inside a group of digits with no separator: that
-- order id holds four Luhn-valid 13 and 15 digit windows starting with 2
-- to 6, none of them at its start or end.  Parts of longer runs not laid
-- out as cards pass: the 5-5-5 and 4-2-2-4-2 digit parts of the list and
-- of the two dates below pass Luhn.  So does a valid IBAN, whose printed
-- groups of four hold a Luhn-valid 16 digit part here.
SELECT label, (pg_temp.guard(doc)).*
FROM (VALUES
    ('seconds', '{"ts": 1767225600, "s": "1767225600"}'::jsonb),
    ('milliseconds', '{"ts": 1767225600000, "s": "1767225600000"}'),
    ('microseconds', '{"ts": 1767225600000000}'),
    ('timestamps side by side', '"1767225600 1767225601 1767225602"'),
    ('numbers in text', '"order 123456 qty 2 price 1999"'),
    ('short numbers side by side', '"123456 2 1999 42 7"'),
    ('phone numbers', '["+44 20 7946 0958", "+1-202-555-0143", "+49 30 901820"]'),
    ('dates and times', '["2026-03-01 10:00:00", "2026-03-01T10:00:00.123456Z"]'),
    ('20 digit order id', '"order 90532746179102435345"'),
    ('20 digit order id as a number', '{"id": 90532746179102435345}'),
    ('Luhn-invalid card-like run', '"4111 1111 1111 1112 99"'),
    ('list of ids', '"11718 38407 63497 46632 33865"'),
    ('two dates', '"2016-06-10 2004-10-19"'),
    ('IBAN, printed', '"DE37 3466 1099 0695 8483 04"'),
    ('IBAN, printed in lower case', '"de37 3466 1099 0695 8483 04"'),
    ('IBAN, compact', '"DE37346610990695848304"'),
    ('IBAN in text', '"IBAN: DE37 3466 1099 0695 8483 04, BIC: COBADEFFXXX"')
) AS t(label, doc);

-- A long document is read once with bounded work per digit: a megabyte of
-- two-digit groups, each a candidate start, none a card.
SET statement_timeout = '20s';
SELECT (pg_temp.guard(to_jsonb(repeat('20 ', 350000)))).*;
SELECT (pg_temp.guard(to_jsonb(repeat('4', 1000000)))).*;
RESET statement_timeout;
