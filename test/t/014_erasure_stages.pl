# Erasure in stages on a primary and a hot standby: a subject erased to the
# trash is hidden in every standby session, and its values no longer
# decrypt for an application, from the first statement after replay; a
# restore brings it back the same way.  A purge killed by a crash of the
# primary (kill -9 of the postmaster while the purge waits in the middle of
# its deletions) leaves the subject exactly as it was; purging it again
# completes it, and the standby follows.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $key_command = key_file_command(random_key_hex());
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'gdprcrm'");
$primary->append_conf('postgresql.conf', "gdprcrm.key_command = '$key_command'");
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	CREATE ROLE app_role IN ROLE gdprcrm_app;
	CREATE ROLE dpo IN ROLE gdprcrm_admin;
	SELECT gdprcrm.create_project('Acme', ARRAY['app_role', 'dpo']::name[]);
	SELECT gdprcrm.define_purpose('support', 'contract', 'Answering requests');
	SELECT gdprcrm.identify(1, 'u-' || i, 'person' || i || '@example.org') FROM generate_series(1, 5) AS i;
	UPDATE gdprcrm.people SET name = gdprcrm.encrypt(id, 'Person ' || id, 'crm.people.name');
	-- The names' ciphertexts, for the application to try outside the filter.
	CREATE TABLE names AS SELECT id, name FROM gdprcrm.people;
	GRANT SELECT ON names TO app_role;

	-- Two application tables; a purge empties a_notes before tickets, and
	-- waits in the middle of tickets for as long as the test holds its lock.
	CREATE TABLE a_notes (id serial PRIMARY KEY, customer bigint NOT NULL, body text);
	CREATE TABLE tickets (id serial PRIMARY KEY, customer bigint NOT NULL, body text);
	SELECT gdprcrm.protect('a_notes', 'customer'), gdprcrm.protect('tickets', 'customer');
	SELECT gdprcrm.register_table('a_notes', 'customer'), gdprcrm.register_table('tickets', 'customer');
	INSERT INTO a_notes (customer, body) SELECT id, 'note of ' || id FROM gdprcrm.people;
	INSERT INTO tickets (customer, body) SELECT id, 'ticket of ' || id FROM gdprcrm.people;
	CREATE FUNCTION wait_for_the_test() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_advisory_xact_lock(4242);
		RETURN OLD;
	END $$;
	CREATE TRIGGER wait_for_the_test BEFORE DELETE ON tickets
		FOR EACH ROW EXECUTE FUNCTION wait_for_the_test();
});
my @people = split /\n/, $primary->safe_psql('postgres', 'SELECT id FROM gdprcrm.people ORDER BY id');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

# A long-lived application session on the standby, and a superuser's.
my $app = $standby->background_psql('postgres');
$app->query_safe("SET ROLE app_role; SET gdprcrm.purpose = 'support'");
my $dba = $standby->background_psql('postgres');
my $visible = q{SELECT count(*) FROM gdprcrm.people};
my $decryptable = q{SELECT count(gdprcrm.decrypt(name, 'crm.people.name')) FROM names};
is($app->query_safe($visible), '5', 'the standby session sees every person');
is($app->query_safe($decryptable), '5', 'and decrypts every name');

# To the trash on the primary.
$primary->safe_psql('postgres', "SET ROLE dpo; SELECT gdprcrm.erase_subject($people[0], 'request')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '4', 'the trashed person is hidden in the open standby session');
is($app->query_safe($decryptable), '4', 'its name no longer decrypts for the application');
is($app->query_safe("SELECT gdprcrm.decrypt(name, 'crm.people.name') IS NULL FROM names WHERE id = $people[0]"),
	't', 'it reads as NULL');
is($dba->query_safe($decryptable), '5', 'a superuser still decrypts it');
is($standby->safe_psql('postgres', "SET ROLE app_role; SET gdprcrm.purpose = 'support'; $visible"),
	'4', 'a new standby session agrees');

# Restored on the primary.
$primary->safe_psql('postgres', "SET ROLE dpo; SELECT gdprcrm.restore_subject($people[0])");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '5', 'the restored person is visible again in the open session');
is($app->query_safe($decryptable), '5', 'and its name decrypts again');

# A purge, killed with the primary while it waits in the middle of tickets,
# after a_notes and the suppression list were written.
my $state_of = sub {
	my ($person) = @_;
	return $primary->safe_psql('postgres', qq{
		SELECT (SELECT count(*) FROM gdprcrm.people WHERE id = $person) || ' '
		    || (SELECT count(*) FROM a_notes WHERE customer = $person) || ' '
		    || (SELECT count(*) FROM tickets WHERE customer = $person) || ' '
		    || (SELECT count(*) FROM gdprcrm.suppressed_identifiers WHERE subject = $person) || ' '
		    || (SELECT count(*) FROM gdprcrm.subject_keys WHERE subject = $person AND wrapped_key IS NOT NULL) || ' '
		    || (SELECT count(*) FROM gdprcrm.rights_log WHERE subject = $person AND action = 'purge') || ' '
		    || coalesce((SELECT (trashed_at IS NOT NULL)::text || '/' || (purged_at IS NOT NULL)::text
		                 FROM gdprcrm.subject_state WHERE subject = $person), 'none')
	});
};
is($state_of->($people[1]), '1 1 1 0 1 0 none',
	'before the purge: person, notes, tickets and key there, nothing suppressed');

my $holder = $primary->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
my $purger = $primary->background_psql('postgres', on_error_stop => 0);
$purger->query_until(qr/purging/, "\\echo purging\nSET ROLE dpo;\nSELECT gdprcrm.purge_subject($people[1]);\n");
$primary->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  or die 'the purge did not reach tickets';
is($primary->safe_psql('postgres', 'SELECT count(*) FROM a_notes WHERE customer = ' . $people[1]),
	'1', 'other sessions still see the notes the waiting purge deleted');

# kill -9 of the postmaster; its children exit once they notice.
my @children = split /\n/, $primary->safe_psql('postgres',
	'SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
$primary->kill9;
for my $i (1 .. 600)
{
	last unless grep { kill 0, $_ } @children;
	usleep(100_000);
}
ok(!(grep { kill 0, $_ } @children), 'every process of the killed primary is gone');
eval { $holder->quit };
eval { $purger->quit };
$primary->start;
is($state_of->($people[1]), '1 1 1 0 1 0 none',
	'after the crash the purge never happened: rows, key, identifiers and log as before');

# Purging again completes it; the trigger waits for nobody now.
is($primary->safe_psql('postgres', "SET ROLE dpo; SELECT gdprcrm.purge_subject($people[1])"),
	't', 'the purge called again completes');
is($state_of->($people[1]), '0 0 0 2 0 1 true/true',
	'no row, no key, identifiers suppressed, one purge logged');
is($primary->safe_psql('postgres', "SELECT gdprcrm.identify(1, 'u-2', 'PERSON2\@example.org') IS NULL"),
	't', 'identify does not create the purged person again');

$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '4', 'the standby session no longer sees the purged person');
is($app->query_safe($decryptable), '4', 'nor decrypts its name');
is($dba->query_safe("SELECT gdprcrm.decrypt(name, 'crm.people.name') IS NULL FROM names WHERE id = $people[1]"),
	't', 'not even a superuser: its key is destroyed');

# Nothing decrypted reached either server log.
for my $node ($primary, $standby)
{
	unlike(slurp_file($node->logfile), qr/Person \d|person\d\@/, $node->name . ' log holds no personal value');
}

$app->quit;
$dba->quit;
$standby->stop;
$primary->stop;
done_testing();
