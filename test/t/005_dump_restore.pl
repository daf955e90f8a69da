# pg_dump and restore move ciphertext and wrapped keys, never plaintext or
# keys: a fresh cluster with the same root key decrypts everything (erased
# subjects stay erased, blind index lookups still match); one with another
# root key restores the same dump and fails cleanly at decryption.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $key = random_key_hex();
my $source = preloaded_node('dump_source', key_command => key_file_command($key));
$source->start;
$source->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	CREATE TABLE people (
		id bigint PRIMARY KEY,
		email gdprcrm.encrypted_text,
		email_bidx bytea,
		traits gdprcrm.encrypted_jsonb,
		photo gdprcrm.encrypted_bytea
	);
	CREATE INDEX ON people (email_bidx);
	INSERT INTO people
	SELECT i,
	       gdprcrm.encrypt(i, 'CANA' || 'RY-person' || i || '@example.com', 'people.email'),
	       gdprcrm.blind_index(gdprcrm.normalize_email('CANA' || 'RY-person' || i || '@example.com'), 'email'),
	       gdprcrm.encrypt(i, jsonb_build_object('plan', 'CANA' || 'RY-plan-' || i), 'people.traits'),
	       gdprcrm.encrypt(i, convert_to('CANA' || 'RY-photo-' || i, 'UTF8'), 'people.photo')
	FROM generate_series(1, 200) AS i;
	SET gdprcrm.cipher = aes256gcm;
	UPDATE people SET email = gdprcrm.encrypt(id, 'CANA' || 'RY-person' || id || '@example.com', 'people.email')
	WHERE id % 2 = 0;
	RESET gdprcrm.cipher;
	SELECT gdprcrm.shred_subject_key(7);
});

my $readable_sql = q{
	SELECT count(gdprcrm.decrypt(email, 'people.email', id)) || '/' ||
	       count(gdprcrm.decrypt(traits, 'people.traits', id)) || '/' ||
	       count(gdprcrm.decrypt(photo, 'people.photo', id)) || '/' ||
	       count(*) FILTER (WHERE gdprcrm.is_erased(email))
	FROM people
};
is($source->safe_psql('postgres', $readable_sql), '199/199/199/1', 'source: 199 readable, 1 erased');
my $checksum_sql = q{SELECT md5(string_agg(gdprcrm.decrypt(email, 'people.email', id), ',' ORDER BY id)) FROM people};
my $checksum = $source->safe_psql('postgres', $checksum_sql);

my $dump = PostgreSQL::Test::Utils::tempdir() . '/crm.dump';
$source->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('postgres') ],
	'pg_dump of a database with encrypted columns');
my $plain_dump = PostgreSQL::Test::Utils::tempdir() . '/crm.sql';
$source->command_ok([ 'pg_dump', '-f', $plain_dump, '-d', $source->connstr('postgres') ],
	'plain-format pg_dump');
my $text = slurp_file($plain_dump);
unlike($text, qr/CANARY/, 'the dump holds no plaintext');
my @key_parts = grep { index($text, $_) >= 0 } log_fragments_of($key);
is(scalar @key_parts, 0, 'the dump holds no fragment of the root key');
like($text, qr/COPY gdprcrm\.subject_keys/, 'the dump keeps the wrapped subject keys');

# Same root key: everything decrypts as before.
my $same = preloaded_node('dump_same_key', key_command => key_file_command($key));
$same->start;
$same->command_ok([ 'pg_restore', '--exit-on-error', '-d', $same->connstr('postgres'), $dump ],
	'pg_restore into a fresh cluster with the same root key');
is($same->safe_psql('postgres', $readable_sql), '199/199/199/1',
	'same key: every value decrypts, the erased subject stays erased');
is($same->safe_psql('postgres', $checksum_sql), $checksum, 'same key: identical plaintexts');
is($same->safe_psql('postgres', q{
	SELECT gdprcrm.decrypt(email, 'people.email', id) FROM people
	WHERE email_bidx = gdprcrm.blind_index(gdprcrm.normalize_email('cana' || 'ry-PERSON42@example.com'), 'email')}),
	'CANARY-person42@example.com', 'same key: lookup by blind index still matches');
my ($ret, $out, $err) = $same->psql('postgres', q{SELECT gdprcrm.encrypt(7, 'again', 'people.email')});
like($err, qr/cannot encrypt a value for an erased subject/, 'same key: the erased subject cannot come back');

# Plain SQL restore works too.
my $plain = preloaded_node('dump_plain', key_command => key_file_command($key));
$plain->start;
$plain->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', $plain_dump, '-d', $plain->connstr('postgres') ],
	'plain dump restores with psql');
is($plain->safe_psql('postgres', $checksum_sql), $checksum, 'plain restore: identical plaintexts');

# Another root key: the restore itself works (no key is needed to move
# ciphertext), decryption fails with a clear error and no plaintext.
my $other = preloaded_node('dump_other_key', key_command => key_file_command(random_key_hex()));
$other->start;
$other->command_ok([ 'pg_restore', '--exit-on-error', '-d', $other->connstr('postgres'), $dump ],
	'pg_restore into a cluster with another root key');
is($other->safe_psql('postgres', 'SELECT count(*) FROM people'), '200', 'other key: all rows restored');
($ret, $out, $err) = $other->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT gdprcrm.decrypt(email, 'people.email') FROM people WHERE id = 1");
isnt($ret, 0, 'other key: decryption fails');
like($err, qr/ERROR:  55000: a gdprcrm data key is wrapped by a root key that is not loaded/,
	'other key: with SQLSTATE 55000 and a clear message');
unlike($err, qr/CANARY/, 'other key: no plaintext in the error');
($ret, $out, $err) = $other->psql('postgres',
	q{SELECT gdprcrm.blind_index('x', 'email')});
like($err, qr/wrapped by a root key that is not loaded/, 'other key: blind indexes fail the same way');

for my $node ($source, $same, $plain, $other)
{
	unlike(slurp_file($node->logfile), qr/CANARY/, 'no plaintext in the log of ' . $node->name);
	$node->stop;
}

done_testing();
