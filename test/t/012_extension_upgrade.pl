# Releases: the installed script of the current version is its frozen copy
# once released (a release is never edited), and every older release,
# installed and updated with ALTER EXTENSION gdprcrm UPDATE, gives exactly
# what a fresh install of the current version gives: the same
# pg_dump --schema-only --binary-upgrade (which dumps the extension's
# member objects), the same member list and the same gdprcrm roles.  The
# comparison itself is checked too: two fresh installs compare equal, and
# changes made behind the extension's back compare different.
#
# Roles belong to the cluster, not to a database: a role that only the
# current version's install script creates would already exist for the
# update once a fresh install had run, and an update script that forgot
# it would pass here and fail everywhere else.  So the releases are
# installed and updated first, in a cluster where the current version was
# never installed, and the roles they leave are compared with those a
# fresh install leaves.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $top = "$FindBin::Bin/../..";
my ($current) = slurp_file("$top/gdprcrm.control") =~ /^default_version\s*=\s*'([^']+)'/m;
die "no default_version in gdprcrm.control" unless defined $current;

my $node = preloaded_node('upgrade', key_command => key_file_command(random_key_hex()));
$node->start;

is($node->safe_psql('postgres', q{SELECT default_version FROM pg_available_extensions WHERE name = 'gdprcrm'}),
	$current, "the installed gdprcrm is the tree's version $current");

# A release is never edited: once frozen, the installed script is the
# frozen one, byte for byte.
my $installed = $node->config_data('--sharedir') . "/extension/gdprcrm--$current.sql";
my $frozen = "$top/src/sql/released/gdprcrm--$current.sql";
if (-e $frozen)
{
	ok(slurp_file($installed) eq slurp_file($frozen),
		"the installed gdprcrm--$current.sql equals src/sql/released/gdprcrm--$current.sql");
}
else
{
	pass("$current is not released yet: no frozen script to compare");
}

# Every version an update script starts from or leads to, other than the
# current one, is a frozen release: a release that was never frozen (make
# freeze) can be neither installed nor updated here.
my %released = map { m{/gdprcrm--([0-9.]+)\.sql$} ? ($1 => 1) : () }
  glob("$top/src/sql/released/gdprcrm--*.sql");
my @unfrozen;
for my $update (glob("$top/src/sql/updates/*.sql"))
{
	my ($from, $to) = $update =~ m{/([0-9.]+)--([0-9.]+)\.sql$}
	  or die "$update is not named <from>--<to>.sql";
	push @unfrozen, grep { $_ ne $current && !$released{$_} } $from, $to;
}
is(join(' ', sort keys %{ { map { $_ => 1 } @unfrozen } }),
	'', 'every version the update scripts lead from or to is current or frozen in src/sql/released/');

# The schema of a database's gdprcrm: its dump, without what differs
# between equal schemas (OIDs, relfilenodes, transaction ids, storage of
# dropped columns and of columns added with a default, the order of
# configuration tables and of the grants of one object), its member list
# and its configuration tables.
sub schema_of
{
	my ($db) = @_;
	my ($dump, $err);
	IPC::Run::run([ 'pg_dump', '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ],
		'>', \$dump, '2>', \$err)
	  or die "pg_dump of $db failed: $err";

	$dump =~ s/^\\(?:un)?restrict .*\n//mg;
	$dump =~ s/^.*binary_upgrade_set_next_.*\n//mg;
	$dump =~ s/^-- For binary upgrade, set (?:heap|toast)'s relfrozenxid and relminmxid\n(?:.*\n){3}\n?//mg;
	$dump =~ s/^-- For binary upgrade, recreate dropped column\.\n(?:.*\n){4}ALTER TABLE ONLY .* DROP COLUMN "\.+pg\.dropped\.\d+\.+";\n\n?//mg;
	$dump =~ s/^    "\.+pg\.dropped\.\d+\.+" .*\n//mg;
	$dump =~ s/,\n\);$/\n);/mg;
	$dump =~ s/^\n-- set missing value\.\n.*binary_upgrade_set_missing_value.*\n\n//mg;
	# Configuration tables and their conditions are parallel arrays in OID
	# order; they are compared as pairs, by name, from the catalog below.
	$dump =~ s/(binary_upgrade_create_empty_extension\([^)]*?)'\{[\d,]*\}', '\{(?:"(?:[^"\\]|\\.)*",?)*\}'/$1'{configuration tables}', '{conditions}'/;
	$dump =~ s/((?:^(?:GRANT|REVOKE) .*\n)+)/join('', sort split(m{^}m, $1))/mge;

	my $members = $node->safe_psql($db, q{
		SELECT pg_describe_object(classid, objid, objsubid) FROM pg_depend
		WHERE refclassid = 'pg_extension'::regclass
		  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'gdprcrm')
		  AND deptype = 'e'
		ORDER BY 1});
	my $config = $node->safe_psql($db, q{
		SELECT c.relid::regclass || ' ' || c.condition
		FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS c (relid, condition)
		WHERE e.extname = 'gdprcrm'
		ORDER BY 1});
	return { dump => $dump, members => $members, config => $config };
}

# The gdprcrm roles, as the install scripts leave them: attributes,
# settings and memberships, which pg_dump of a database does not show.
sub roles
{
	return $node->safe_psql('postgres', q{
		SELECT pg_catalog.concat_ws(' ', r.rolname, r.rolsuper, r.rolinherit, r.rolcreaterole,
			r.rolcreatedb, r.rolcanlogin, r.rolreplication, r.rolbypassrls, r.rolconnlimit,
			r.rolconfig::text)
		FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'gdprcrm%'
		UNION ALL
		SELECT pg_catalog.concat_ws(' ', g.rolname, 'has member', m.rolname, a.admin_option)
		FROM pg_catalog.pg_auth_members a
			JOIN pg_catalog.pg_roles g ON g.oid = a.roleid
			JOIN pg_catalog.pg_roles m ON m.oid = a.member
		WHERE g.rolname LIKE 'gdprcrm%' OR m.rolname LIKE 'gdprcrm%'
		ORDER BY 1});
}

# Show how two texts differ, for a failure.
sub diag_diff
{
	my ($what, $a, $b) = @_;
	my $dir = PostgreSQL::Test::Utils::tempdir();
	append_to_file("$dir/a", $a);
	append_to_file("$dir/b", $b);
	my $out;
	IPC::Run::run([ 'diff', '-u', "$dir/a", "$dir/b" ], '>', \$out);
	my @lines = split /\n/, $out;
	splice @lines, 60 if @lines > 60;
	diag("$what differs:\n" . join("\n", @lines));
}

# compare_schemas(A, B, NAME): both schemas are the same.
sub compare_schemas
{
	my ($a, $b, $name) = @_;
	for my $part (qw(dump members config))
	{
		ok($a->{$part} eq $b->{$part}, "$name: same $part")
		  or diag_diff($part, $a->{$part}, $b->{$part});
	}
}

# differ(A, B, PART): A and B are told apart by PART.
sub differ
{
	my ($a, $b, $part) = @_;
	return $a->{$part} ne $b->{$part};
}

sub new_database
{
	my ($db, $sql) = @_;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $sql);
	return schema_of($db);
}

# Every older release, updated: installed and updated before anything
# else (see the top), compared with a fresh install below.
sub version_key
{
	return join '.', map { sprintf '%05d', $_ } split /\./, shift;
}
my @older =
  sort { version_key($a) cmp version_key($b) }
  grep { version_key($_) lt version_key($current) }
  map { m{/gdprcrm--([0-9.]+)\.sql$} ? $1 : () } glob("$top/src/sql/released/gdprcrm--*.sql");

# What a database holds, read the same way before and after an update:
# counts, every decryption, every purpose decision.
my $facts = q{
	SELECT (SELECT count(*) FROM gdprcrm.people) AS people,
	       (SELECT count(*) FROM gdprcrm.events) AS events,
	       (SELECT count(*) FROM gdprcrm.messages) AS messages,
	       (SELECT count(*) FROM gdprcrm.enrichments) AS enrichments,
	       (SELECT count(*) FROM gdprcrm.consent_events) AS consent_events,
	       (SELECT string_agg(concat_ws('/', gdprcrm.decrypt(email, 'crm.people.email', id),
	                                         gdprcrm.decrypt(name, 'crm.people.name', id), external_id, traits),
	                          ',' ORDER BY id) FROM gdprcrm.people) AS profiles,
	       (SELECT string_agg(concat_ws('/', gdprcrm.decrypt(subject, 'crm.messages.subject', person_id),
	                                         gdprcrm.decrypt(body, 'crm.messages.body', person_id)),
	                          ',' ORDER BY id) FROM gdprcrm.messages) AS messages_text,
	       (SELECT string_agg(gdprcrm.explain_access(id, p.name), ',' ORDER BY id, p.name)
	        FROM gdprcrm.people, gdprcrm.purposes p) AS decisions,
	       (SELECT string_agg(coalesce(gdprcrm.decrypt(note, 'public.fixture_orders.note', customer), '-'),
	                          ',' ORDER BY id) FROM fixture_orders) AS orders};

my %updated;
for my $release (@older)
{
	(my $db = "from_$release") =~ s/\./_/g;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, "CREATE EXTENSION gdprcrm VERSION '$release'");
	$node->safe_psql($db, 'ALTER EXTENSION gdprcrm UPDATE');
	is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'gdprcrm'}),
		$current, "$release updates to $current");
	$updated{$release} = schema_of($db);

	# The same update on a database with rows, written with that
	# release's API (test/t/fixtures/), keeps every answer.
	my $fixture = "$FindBin::Bin/fixtures/gdprcrm-$release.sql";
	ok(-f $fixture, "release $release has a data fixture") or next;
	my $data_db = "${db}_data";
	$node->safe_psql('postgres', "CREATE DATABASE $data_db");
	$node->safe_psql($data_db, "CREATE EXTENSION gdprcrm VERSION '$release'");
	$node->safe_psql($data_db, slurp_file($fixture));
	my $before = $node->safe_psql($data_db, $facts);
	$node->safe_psql($data_db, 'ALTER EXTENSION gdprcrm UPDATE');
	is($node->safe_psql($data_db, $facts), $before,
		"$release with rows updated to $current: every count, decryption and purpose decision the same");
}
my $roles_updated = roles();

my $fresh = new_database('fresh', 'CREATE EXTENSION gdprcrm');
my $roles_fresh = roles();
like($fresh->{dump}, qr/ALTER EXTENSION gdprcrm ADD TABLE gdprcrm\.people;/,
	'the binary-upgrade dump holds the extension member objects');

# The comparison sees what it must, and nothing else.
compare_schemas($fresh, new_database('fresh_again', 'CREATE EXTENSION gdprcrm'), 'two fresh installs');
ok( differ(
		$fresh,
		new_database(
			'changed_comment', q{
			CREATE EXTENSION gdprcrm;
			COMMENT ON FUNCTION gdprcrm.random_bytes(integer) IS 'changed behind the extension''s back'}),
		'dump'),
	'a changed comment of a member function is a difference');
ok( differ(
		$fresh,
		new_database(
			'added_column', q{
			CREATE EXTENSION gdprcrm;
			ALTER TABLE gdprcrm.purposes ADD COLUMN added integer}),
		'dump'),
	'a column added to a member table is a difference');
ok( differ(
		$fresh,
		new_database(
			'dropped_member', q{
			CREATE EXTENSION gdprcrm;
			ALTER EXTENSION gdprcrm DROP FUNCTION gdprcrm.normalize_email(text)}),
		'members'),
	'a function no longer a member is a difference');
compare_schemas(
	$fresh,
	new_database(
		'column_dropped_again', q{
		CREATE EXTENSION gdprcrm;
		ALTER TABLE gdprcrm.purposes ADD COLUMN added text DEFAULT 'x';
		ALTER TABLE gdprcrm.purposes DROP COLUMN added}),
	'a column added and dropped again');
ok($roles_fresh eq roles(), 'fresh installs after the first leave the roles as they are');
$node->safe_psql('postgres', 'CREATE ROLE gdprcrm_changed');
ok($roles_fresh ne roles(), 'a role added is a difference');
$node->safe_psql('postgres', 'DROP ROLE gdprcrm_changed');
$node->safe_psql('postgres', 'GRANT gdprcrm_analyst TO gdprcrm_app');
ok($roles_fresh ne roles(), 'a membership granted is a difference');
$node->safe_psql('postgres', 'REVOKE gdprcrm_analyst FROM gdprcrm_app');

# Every older release, updated, is the current version.
SKIP:
{
	skip "no release older than $current: the first update checked is the one to the next version", 1
	  unless @older;

	for my $release (@older)
	{
		compare_schemas($fresh, $updated{$release}, "$release updated to $current and a fresh $current");
	}
	ok($roles_updated eq $roles_fresh,
		"the roles an update leaves are those a fresh install of $current leaves")
	  or diag_diff('roles', $roles_updated, $roles_fresh);
}

$node->stop;
done_testing();
