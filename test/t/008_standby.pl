# Hot standbys: a withdrawal, a restriction or an erasure committed on the
# primary counts in every standby session from the first statement after
# its replay, sessions that had already read the subjects included; the
# primary survives a crash with gdprcrm's WAL records in its log.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $key_command = key_file_command(random_key_hex());
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "shared_preload_libraries = 'gdprcrm'");
$primary->append_conf('postgresql.conf', "gdprcrm.key_command = '$key_command'");
$primary->start;
$primary->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	CREATE ROLE analyst_app LOGIN IN ROLE gdprcrm_app;
	SELECT gdprcrm.create_project('Acme', ARRAY['analyst_app']::name[]);
	SELECT gdprcrm.define_purpose('marketing', 'consent', 'Newsletters');
	SELECT gdprcrm.define_purpose('support', 'contract', 'Answering requests');
	SELECT gdprcrm.identify(1, 'u-' || i) FROM generate_series(1, 9) AS i;
	UPDATE gdprcrm.people SET name = gdprcrm.encrypt(id, 'Person ' || id, 'crm.people.name');
	SELECT gdprcrm.grant_consent(id, 'marketing') FROM gdprcrm.people;
});
my @people = split /\n/, $primary->safe_psql('postgres', 'SELECT id FROM gdprcrm.people ORDER BY id');

$primary->backup('base');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'base', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));

# Two long-lived standby sessions: an application reading under a purpose,
# and a superuser decrypting every name.
my $app = $standby->background_psql('postgres');
$app->query_safe("SET ROLE analyst_app; SET gdprcrm.purpose = 'marketing'");
my $dba = $standby->background_psql('postgres');
my $visible = q{SELECT count(*) FROM gdprcrm.people};
my $decryptable = q{SELECT count(gdprcrm.decrypt(name, 'crm.people.name', id)) FROM gdprcrm.people};
is($app->query_safe($visible), '9', 'standby session sees every consenting person');
is($dba->query_safe($decryptable), '9', 'standby session decrypts every name');

# Four withdrawals and one erasure on the primary.
$primary->safe_psql('postgres', join ';',
	(map { "SELECT gdprcrm.withdraw_consent($_, 'marketing')" } @people[5 .. 8]),
	"SELECT gdprcrm.shred_subject_key($people[0])");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '4', 'withdrawals and the erasure hide five people in the open session');
is($dba->query_safe($decryptable), '8', 'the erased person no longer decrypts in the open session');
is($dba->query_safe("SELECT gdprcrm.decrypt(name, 'crm.people.name', id) IS NULL FROM gdprcrm.people WHERE id = $people[0]"),
	't', 'the erased name reads as NULL');
my $fresh = $standby->safe_psql('postgres',
	"SET ROLE analyst_app; SET gdprcrm.purpose = 'marketing'; $visible");
is($fresh, '4', 'a new standby session agrees');

# A restriction and its lifting, a consent given again: both ways count.
$primary->safe_psql('postgres', "SELECT gdprcrm.restrict_processing($people[1], 'contested')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '3', 'a restriction hides the person in the open session');
$primary->safe_psql('postgres', "SELECT gdprcrm.lift_restriction($people[1]); SELECT gdprcrm.grant_consent($people[5], 'marketing')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '5', 'lifting and granting show them again');

# A transaction rolled back on the primary changes nothing on the standby
# (it never reaches the commit that would write its record).
$primary->safe_psql('postgres', "BEGIN; SELECT gdprcrm.withdraw_consent($people[2], 'marketing'); ROLLBACK");
$primary->safe_psql('postgres', "SELECT gdprcrm.define_purpose('unrelated', 'contract', 'A later commit')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '5', 'a rolled-back withdrawal does not count');

# More subjects in one transaction than a WAL record lists one by one.
$primary->safe_psql('postgres', q{
	INSERT INTO gdprcrm.people (project_id) SELECT 1 FROM generate_series(1, 9000);
	SELECT count(gdprcrm.grant_consent(id, 'marketing')) FROM gdprcrm.people WHERE external_id IS NULL;
});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '9005', 'a mass grant reaches the open session');
$primary->safe_psql('postgres', q{
	SELECT count(gdprcrm.withdraw_consent(id, 'marketing')) FROM gdprcrm.people WHERE external_id IS NULL;
});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '5', 'and so does a mass withdrawal');

# A statement that runs while an erasure is replayed stops decrypting the
# subject at its next value, not at its end.
$primary->safe_psql('postgres', q{
	CREATE FUNCTION erasure_seen_after(person bigint, tries int) RETURNS int
	LANGUAGE plpgsql AS $$
	DECLARE
		v text;
	BEGIN
		FOR i IN 1 .. tries LOOP
			SELECT gdprcrm.decrypt(name, 'crm.people.name', id) INTO v FROM gdprcrm.people WHERE id = person;
			IF v IS NULL THEN
				RETURN i;
			END IF;
			PERFORM pg_sleep(0.1);
		END LOOP;
		RETURN NULL;
	END $$;
});
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
my $long_out = '';
my $long = IPC::Run::start(
	[ $standby->installed_command('psql'), '-XAtq', '-d', $standby->connstr('postgres'), '-c', "SELECT erasure_seen_after($people[8], 600)" ],
	'>', \$long_out, '2>', \$long_out);
$standby->poll_query_until('postgres',
	"SELECT count(*) = 1 FROM pg_stat_activity WHERE query LIKE 'SELECT erasure_seen_after%' AND state = 'active'")
  or die 'the long statement did not start';
$primary->safe_psql('postgres', "SELECT gdprcrm.shred_subject_key($people[8])");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
$long->finish;
like($long_out, qr/^\d+$/, 'a running statement on the standby stops decrypting an erased subject before it ends');

# The primary crashes with gdprcrm's records in its WAL and comes back.
$primary->safe_psql('postgres', "SELECT gdprcrm.withdraw_consent($people[3], 'marketing')");
$primary->stop('immediate');
$primary->start;
is($primary->safe_psql('postgres', "SET ROLE analyst_app; SET gdprcrm.purpose = 'marketing'; $visible"),
	'4', 'the primary recovers and keeps the withdrawal');
$primary->safe_psql('postgres', "SELECT gdprcrm.withdraw_consent($people[4], 'marketing')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '3', 'the standby session follows after the crash too');

# A member removed from the team on the primary loses the project on the
# standby from the next statement (the team change travels as a catalog
# invalidation in the commit record).
$primary->safe_psql('postgres', "SELECT gdprcrm.remove_project_member(1, 'analyst_app')");
$primary->wait_for_catchup($standby, 'replay', $primary->lsn('insert'));
is($app->query_safe($visible), '0', 'a removed member sees nothing in the open session');

# Nothing decrypted reached either server log during all of this.
for my $node ($primary, $standby)
{
	unlike(slurp_file($node->logfile), qr/Person \d/, $node->name . ' log holds no decrypted name');
}

$app->quit;
$dba->quit;
$standby->stop;
$primary->stop;
done_testing();
