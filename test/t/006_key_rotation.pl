# Rotating the root key without re-encrypting data: start with the new key
# in gdprcrm.key_command and the old one in gdprcrm.previous_key_command,
# rewrap every stored key, then drop the old key.  Everything still
# decrypts, blind indexes still match, and the old key alone no longer
# opens anything.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $old_key = random_key_hex();
my $new_key = random_key_hex();
my $old_command = key_file_command($old_key);
my $new_command = key_file_command($new_key);

my $node = preloaded_node('rotation', key_command => $old_command);
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	CREATE TABLE people (id bigint PRIMARY KEY, email gdprcrm.encrypted_text, email_bidx bytea);
	INSERT INTO people
	SELECT i, gdprcrm.encrypt(i, 'person' || i || '@example.com', 'people.email'),
	       gdprcrm.blind_index('person' || i || '@example.com', 'email')
	FROM generate_series(1, 250) AS i;
	SELECT gdprcrm.shred_subject_key(13);
});
my $old_fingerprint = $node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()');
my $checksum_sql = q{SELECT count(gdprcrm.decrypt(email, 'people.email', id)) || ':' ||
	md5(string_agg(gdprcrm.decrypt(email, 'people.email', id), ',' ORDER BY id)) FROM people};
my $checksum = $node->safe_psql('postgres', $checksum_sql);
like($checksum, qr/^249:/, '249 values readable before the rotation');
my $table_files = $node->safe_psql('postgres', q{SELECT md5(string_agg(email::text, ',' ORDER BY id)) FROM people});
$node->stop;

# Step 1: the new key becomes current, the old one previous.
$node->append_conf('postgresql.conf', "gdprcrm.key_command = '$new_command'");
$node->append_conf('postgresql.conf', "gdprcrm.previous_key_command = '$old_command'");
$node->start;
like(slurp_file($node->logfile), qr/gdprcrm loaded a previous root key for rotation/,
	'the server announces the rotation');
my $new_fingerprint = $node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()');
isnt($new_fingerprint, $old_fingerprint, 'a new root key is current');
is($node->safe_psql('postgres', $checksum_sql), $checksum, 'during the rotation everything decrypts');

# Step 2: rewrap in batches until nothing is left.
my @batches;
while (1)
{
	my $n = $node->safe_psql('postgres', 'SELECT gdprcrm.rewrap_keys(100)');
	push @batches, $n;
	last if $n == 0 || @batches > 10;
}
is(join(',', @batches), '101,100,49,0',
	'rewrap_keys works in batches (first batch includes the database key) until 0');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM gdprcrm.subject_keys WHERE wrapped_key IS NOT NULL AND wrapped_with <> '$new_fingerprint'"),
	'0', 'every live subject key is wrapped under the new root key');
is($node->safe_psql('postgres',
	"SELECT count(*) FROM gdprcrm.database_keys WHERE wrapped_with <> '$new_fingerprint'"),
	'0', 'so is the blind index key');
is($node->safe_psql('postgres', q{SELECT md5(string_agg(email::text, ',' ORDER BY id)) FROM people}),
	$table_files, 'no value was re-encrypted');
$node->stop;

# Step 3: the old key is gone.
$node->append_conf('postgresql.conf', "gdprcrm.previous_key_command = ''");
$node->start;
is($node->safe_psql('postgres', $checksum_sql), $checksum, 'after the old key is removed everything decrypts');
is($node->safe_psql('postgres', q{SELECT id FROM people
	WHERE email_bidx = gdprcrm.blind_index('person77@example.com', 'email')}), '77',
	'blind indexes still match');
is($node->safe_psql('postgres', q{SELECT gdprcrm.decrypt(gdprcrm.encrypt(500, 'new', 'c'), 'c')}), 'new',
	'new subjects get keys under the new root key');
is($node->safe_psql('postgres', q{SELECT count(*) FROM people WHERE gdprcrm.is_erased(email)}), '1',
	'the erased subject stays erased');
$node->stop;

# The old key alone opens nothing any more.
$node->append_conf('postgresql.conf', "gdprcrm.key_command = '$old_command'");
$node->start;
my ($ret, $out, $err) = $node->psql('postgres',
	q{SELECT gdprcrm.decrypt(email, 'people.email') FROM people WHERE id = 1});
like($err, qr/wrapped by a root key that is not loaded/, 'the old key can no longer unwrap any key');
$node->stop;

# A previous key equal to the current one is pointless and said so.
$node->append_conf('postgresql.conf', "gdprcrm.key_command = '$new_command'");
$node->append_conf('postgresql.conf', "gdprcrm.previous_key_command = '$new_command'");
$node->start;
like(slurp_file($node->logfile), qr/WARNING:  gdprcrm.previous_key_command prints the current root key/,
	'a previous key equal to the current one is warned about');
$node->stop;

# A bad previous key command stops the server like a bad key command.
$node->append_conf('postgresql.conf', "gdprcrm.previous_key_command = 'echo nope'");
ok(!$node->start(fail_ok => 1), 'a previous key command printing garbage stops the server');
like(slurp_file($node->logfile), qr/FATAL:  gdprcrm.previous_key_command did not print a valid root key/,
	'with a clear message');

done_testing();
