# The CRM schema end to end: a refused card number leaves no digit of it in
# the server log, and pg_dump / restore keeps every CRM table (partitions,
# sequences, teams) with row level security still in force.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $key = random_key_hex();
my $node = preloaded_node('crm', key_command => key_file_command($key));
# Statements are logged only when they fail, as in production.
$node->append_conf('postgresql.conf', "log_statement = none");
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	SELECT gdprcrm.create_event_partitions('2026-01-01', '2027-01-01');
	CREATE ROLE crm_app LOGIN IN ROLE gdprcrm_app;
	CREATE ROLE crm_other LOGIN IN ROLE gdprcrm_app;
	SELECT gdprcrm.create_project('Acme', ARRAY['crm_app']::name[]);
	SELECT gdprcrm.create_project('Globex', ARRAY['crm_other']::name[]);
	SELECT gdprcrm.define_purpose('operations', 'contract', 'Operating the customer relationship');
});

# The card number reaches the server only as data (a bind parameter in a
# real application; here a row written by a statement that succeeds), and
# the failing statement refers to it without containing it.
my $card = '4929' . '1234' . '5678' . '9012';
my $sum = 0;
for my $i (0 .. 15)
{
	my $d = substr($card, 15 - $i, 1);
	if ($i % 2) { $d *= 2; $d -= 9 if $d > 9; }
	$sum += $d;
}
substr($card, 15, 1, (10 - ($sum - substr($card, 15, 1)) % 10) % 10);
$node->safe_psql('postgres', "CREATE TABLE staged (props jsonb); GRANT SELECT ON staged TO crm_app;");
$node->safe_psql('postgres', "INSERT INTO staged VALUES (jsonb_build_object('checkout', jsonb_build_object('card', "
	  . join(' || ', map { "'" . substr($card, $_ * 4, 4) . "' || ' '" } 0 .. 3) . ")))");
my $person = $node->safe_psql('postgres', q{SET ROLE crm_app; SET gdprcrm.purpose = 'operations'; SELECT gdprcrm.identify(1, 'u-1', 'ada@example.org')});
my ($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE crm_app; SET gdprcrm.purpose = 'operations'; SELECT gdprcrm.track(1, $person, 'checkout', (SELECT props FROM staged))");
isnt($ret, 0, 'an event holding a card number is refused');
like($err, qr/event property at \$\.checkout\.card looks like a payment card number/, 'naming its path');
my $log = slurp_file($node->logfile);
like($log, qr/looks like a payment card number/, 'the refusal is logged');
my @digits = grep { index($log =~ s/\D//gr, $_) >= 0 } map { substr($card, $_, 6) } 0 .. 10;
is(scalar @digits, 0, 'no six consecutive digits of the card number appear in the log');
unlike($log, qr/\Q@{[substr($card, 0, 4)]} @{[substr($card, 4, 4)]}\E/, 'nor its first groups as printed');

# Some CRM data, written as the application role.
$node->safe_psql('postgres', q{
	SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(1, 'u-' || i, 'person' || i || '@example.org', jsonb_build_object('plan', 'pro'))
	FROM generate_series(2, 50) AS i;
	SELECT gdprcrm.track(1, p.id, 'login', '{}', '2026-05-01'::timestamptz + p.id * interval '1 hour')
	FROM gdprcrm.people p;
	SELECT gdprcrm.track_page_view(1, p.id, 'https://acme.test/docs', 'Docs', NULL, '{}', '2026-11-01')
	FROM gdprcrm.people p;
	SELECT gdprcrm.add_message(1, p.id, 'outbound', 'email', 'Hi', 'Welcome aboard') FROM gdprcrm.people p;
	SELECT gdprcrm.add_enrichment(1, p.id, 'public_profile', 'company', '{"name": "Acme"}') FROM gdprcrm.people p;
	INSERT INTO gdprcrm.companies (project_id, name, domain) VALUES (1, 'Acme', 'acme.test');
	INSERT INTO gdprcrm.person_companies (project_id, person_id, company_id, title)
	SELECT 1, id, 1, 'Engineer' FROM gdprcrm.people;
	RESET ROLE;
	SET ROLE crm_other; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(2, 'g-1', 'someone@globex.test');
});
my $summary_sql = q{
	SELECT (SELECT count(*) FROM gdprcrm.projects) || '/' ||
	       (SELECT count(*) FROM gdprcrm.people) || '/' ||
	       (SELECT count(*) FROM gdprcrm.events) || '/' ||
	       (SELECT count(*) FROM gdprcrm.messages) || '/' ||
	       (SELECT count(*) FROM gdprcrm.enrichments) || '/' ||
	       (SELECT count(*) FROM gdprcrm.person_companies) || '/' ||
	       (SELECT count(*) FROM gdprcrm.companies) || '/' ||
	       (SELECT md5(string_agg(gdprcrm.decrypt(email, 'crm.people.email', id), ',' ORDER BY id)) FROM gdprcrm.people) || '/' ||
	       (SELECT md5(string_agg(gdprcrm.decrypt(body, 'crm.messages.body', person_id), ',' ORDER BY id)) FROM gdprcrm.messages)
};
my $before = $node->safe_psql('postgres', "SET ROLE crm_app; SET gdprcrm.purpose = 'operations'; $summary_sql");
like($before, qr{^1/50/100/50/50/50/1/}, 'the application sees its 50 people and their data');
my $next_person = $node->safe_psql('postgres', q{SELECT last_value FROM gdprcrm.people_id_seq});

my $dump = PostgreSQL::Test::Utils::tempdir() . '/crm.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump of the CRM');

my $restored = preloaded_node('crm_restored', key_command => key_file_command($key));
$restored->start;
# Roles are cluster-wide: create them (and the gdprcrm roles) first, as
# pg_dumpall --roles-only would.
$restored->safe_psql('postgres', q{
	CREATE ROLE gdprcrm_admin NOLOGIN; CREATE ROLE gdprcrm_app NOLOGIN; CREATE ROLE gdprcrm_analyst NOLOGIN;
	CREATE ROLE crm_app LOGIN IN ROLE gdprcrm_app;
	CREATE ROLE crm_other LOGIN IN ROLE gdprcrm_app;
});
$restored->command_ok([ 'pg_restore', '--exit-on-error', '-d', $restored->connstr('postgres'), $dump ],
	'pg_restore into a fresh cluster with the same root key');
is($restored->safe_psql('postgres', "SET ROLE crm_app; SET gdprcrm.purpose = 'operations'; $summary_sql"), $before,
	'every CRM table, partition and encrypted value is back');
is($restored->safe_psql('postgres', q{SELECT last_value FROM gdprcrm.people_id_seq}), $next_person,
	'sequences continue where they were');
is($restored->safe_psql('postgres', q{SET ROLE crm_other; SET gdprcrm.purpose = 'operations'; SELECT count(*) FROM gdprcrm.people}), '1',
	'row level security still separates the projects');
is($restored->safe_psql('postgres', q{SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(1, 'u-7', 'person7@example.org') = (SELECT id FROM gdprcrm.people WHERE external_id = 'u-7')}),
	't', 'identify finds restored people by external id and email');
$restored->safe_psql('postgres', q{SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.track(1, (SELECT id FROM gdprcrm.people WHERE external_id = 'u-7'), 'after_restore', '{}', '2026-12-01')});
is($restored->safe_psql('postgres', q{SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT count(*) FROM gdprcrm.events WHERE name = 'after_restore'}), '1',
	'tracking continues after the restore');

$node->stop;
$restored->stop;
done_testing();
