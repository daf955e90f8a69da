# pg_upgrade from one PostgreSQL 15 cluster to a new one with the same root
# key command: every encrypted value still decrypts to its original, blind
# index lookups find the same people, the erased subject stays erased,
# consent answers, row level security policies and team separation are
# unchanged.  While pg_upgrade runs the servers (binary-upgrade mode)
# gdprcrm does nothing: its key command is not run, and a function that
# needs a key fails cleanly.  No plaintext and no key fragment appears in
# any server log or in what pg_upgrade leaves behind.
use strict;
use warnings;

use Cwd;
use File::Find;
use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# The key command counts its runs in a file, then prints the key.
my $key = random_key_hex();
my $runs_file = PostgreSQL::Test::Utils::tempdir() . '/key_command_runs';
my $key_command = "echo run >> $runs_file; " . key_file_command($key);

sub key_command_runs
{
	return 0 unless -e $runs_file;
	return scalar(() = slurp_file($runs_file) =~ /^run$/mg);
}

my $old = preloaded_node('old', key_command => $key_command);
$old->start;
is(key_command_runs(), 1, 'a normal start runs the key command once');

# Plaintexts are assembled by the server ('CANA' || 'RY...') so that no
# statement text, which the test configuration logs, contains them.
$old->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	SELECT gdprcrm.create_event_partitions('2026-01-01', '2026-04-01');
	CREATE ROLE crm_app LOGIN IN ROLE gdprcrm_app;
	CREATE ROLE crm_other LOGIN IN ROLE gdprcrm_app;
	ALTER ROLE crm_app SET gdprcrm.purpose = 'operations';
	ALTER ROLE crm_other SET gdprcrm.purpose = 'records';
	SELECT gdprcrm.create_project('Acme', ARRAY['crm_app']::name[]);
	SELECT gdprcrm.create_project('Globex', ARRAY['crm_other']::name[]);
	SELECT gdprcrm.define_purpose('operations', 'contract', 'Operating the customer relationship');
	SELECT gdprcrm.define_purpose('marketing', 'consent', 'Newsletters');
	SELECT gdprcrm.define_purpose('profiling', 'legitimate_interests', 'Scoring leads');
	SELECT gdprcrm.define_purpose('records', 'legal_obligation', 'Keeping invoices',
	                              allowed_when_restricted => true);

	SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(1, 'u-' || i, 'CANA' || 'RY-Person' || i || '@Example.org',
	                        jsonb_build_object('plan', 'pro'))
	FROM generate_series(1, 30) AS i;
	UPDATE gdprcrm.people
	SET name = gdprcrm.encrypt(id, 'CANA' || 'RY-name-' || external_id, 'crm.people.name'),
	    phone = gdprcrm.encrypt(id, 'CANA' || 'RY-phone-' || external_id, 'crm.people.phone');
	SELECT gdprcrm.add_message(1, id, 'outbound', 'email', 'CANA' || 'RY-subject-' || external_id,
	                           'CANA' || 'RY-body-' || external_id, '2026-02-03')
	FROM gdprcrm.people;
	SELECT gdprcrm.track(1, id, 'login', jsonb_build_object('n', id),
	                     '2026-01-01'::timestamptz + id * interval '2 days')
	FROM gdprcrm.people;
	SELECT gdprcrm.track(1, id, 'late', '{}', '2027-06-01') FROM gdprcrm.people WHERE id % 10 = 0;
	SELECT gdprcrm.add_enrichment(1, id, 'public_profile', 'company', '{"name": "Acme"}')
	FROM gdprcrm.people;
	RESET ROLE;
	SET ROLE crm_other; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(2, 'g-' || i, 'CANA' || 'RY-globex' || i || '@example.org')
	FROM generate_series(1, 3) AS i;
	RESET ROLE;

	-- A table of the user's own, with all three encrypted types and the
	-- purpose filter.
	CREATE TABLE public.notes (
		person_id bigint NOT NULL,
		body gdprcrm.encrypted_text,
		extra gdprcrm.encrypted_jsonb,
		blob gdprcrm.encrypted_bytea
	);
	SELECT gdprcrm.protect('public.notes', 'person_id');
	GRANT SELECT ON public.notes TO crm_app;
	INSERT INTO public.notes
	SELECT id, gdprcrm.encrypt(id, 'CANA' || 'RY-note-' || external_id, 'notes.body'),
	       gdprcrm.encrypt(id, jsonb_build_object('k', 'CANA' || 'RY-extra-' || external_id), 'notes.extra'),
	       gdprcrm.encrypt(id, convert_to('CANA' || 'RY-blob-' || external_id, 'UTF8'), 'notes.blob')
	FROM gdprcrm.people WHERE project_id = 1;

	-- Consent states of every kind, and one erasure.
	SELECT gdprcrm.grant_consent(id, 'marketing') FROM gdprcrm.people
	WHERE project_id = 1 AND substr(external_id, 3)::int <= 20;
	SELECT gdprcrm.withdraw_consent(id, 'marketing') FROM gdprcrm.people
	WHERE external_id IN ('u-5', 'u-6', 'u-7', 'u-8');
	SELECT gdprcrm.object(id, 'profiling') FROM gdprcrm.people WHERE external_id IN ('u-9', 'u-10');
	SELECT gdprcrm.withdraw_objection(id, 'profiling') FROM gdprcrm.people WHERE external_id = 'u-10';
	SELECT gdprcrm.object(id, 'marketing') FROM gdprcrm.people WHERE external_id = 'u-3';
	SELECT gdprcrm.restrict_processing(id, 'accuracy contested') FROM gdprcrm.people WHERE external_id = 'u-11';
	SELECT gdprcrm.restrict_processing(id, 'accuracy contested') FROM gdprcrm.people WHERE external_id = 'u-13';
	SELECT gdprcrm.lift_restriction(id, 'corrected') FROM gdprcrm.people WHERE external_id = 'u-13';
	SELECT gdprcrm.shred_subject_key(id) FROM gdprcrm.people WHERE external_id = 'u-12';
});

# What the tests below ask both clusters, as a superuser unless a query
# sets a role.  Each answer is one string, compared whole.
my %queries = (
	people => q{
		SELECT string_agg(concat_ws('|', external_id,
		           coalesce(gdprcrm.decrypt(email, 'crm.people.email', id), '-'),
		           coalesce(gdprcrm.decrypt(name, 'crm.people.name', id), '-'),
		           coalesce(gdprcrm.decrypt(phone, 'crm.people.phone', id), '-'),
		           gdprcrm.is_erased(email)), E'\n' ORDER BY project_id, substr(external_id, 3)::int)
		FROM gdprcrm.people},
	messages => q{
		SELECT string_agg(concat_ws('|', p.external_id,
		           coalesce(gdprcrm.decrypt(m.subject, 'crm.messages.subject', m.person_id), '-'),
		           coalesce(gdprcrm.decrypt(m.body, 'crm.messages.body', m.person_id), '-')),
		           E'\n' ORDER BY substr(p.external_id, 3)::int)
		FROM gdprcrm.messages m JOIN gdprcrm.people p ON p.id = m.person_id},
	notes => q{
		SELECT string_agg(concat_ws('|', p.external_id,
		           coalesce(gdprcrm.decrypt(n.body, 'notes.body', n.person_id), '-'),
		           coalesce(gdprcrm.decrypt(n.extra, 'notes.extra', n.person_id) ->> 'k', '-'),
		           coalesce(convert_from(gdprcrm.decrypt(n.blob, 'notes.blob', n.person_id), 'UTF8'), '-')),
		           E'\n' ORDER BY substr(p.external_id, 3)::int)
		FROM public.notes n JOIN gdprcrm.people p ON p.id = n.person_id},
	lookups => q{
		SELECT string_agg(coalesce(by_email.external_id, '?') || '=' || coalesce(by_id.external_id, '?'),
		                  ',' ORDER BY g)
		FROM generate_series(1, 30) AS g
		LEFT JOIN gdprcrm.people by_email
		  ON by_email.project_id = 1
		 AND by_email.email_bidx = gdprcrm.blind_index(
		         gdprcrm.normalize_email(upper('cana' || 'ry-person' || g || '@example.org')), 'email')
		LEFT JOIN gdprcrm.person_identities i
		  ON i.project_id = 1 AND i.kind = 'external_id'
		 AND i.key = gdprcrm.blind_index('u-' || g, 'external_id')
		LEFT JOIN gdprcrm.people by_id ON by_id.id = i.person_id},
	consent => q{
		SELECT string_agg(p.external_id || ' ' || u.name || ': ' || gdprcrm.explain_access(p.id, u.name)
		                  || ' (' || gdprcrm.may_process(p.id, u.name) || ')',
		                  E'\n' ORDER BY p.project_id, substr(p.external_id, 3)::int, u.name)
		FROM gdprcrm.people p CROSS JOIN gdprcrm.purposes u},
	ledgers => q{
		SELECT (SELECT count(*) FROM gdprcrm.consent_events) || ' consent events, ' ||
		       (SELECT count(*) FROM gdprcrm.restriction_events) || ' restriction events, ' ||
		       (SELECT count(*) FROM gdprcrm.consents) || ' consents'},
	policies => q{
		SELECT string_agg(concat_ws(' | ', schemaname, tablename, policyname, permissive, roles::text,
		                            cmd, qual, with_check), E'\n' ORDER BY schemaname, tablename, policyname)
		FROM pg_policies},
	row_security => q{
		SELECT string_agg(c.oid::regclass || ' ' || c.relrowsecurity || ' ' || c.relforcerowsecurity,
		                  ',' ORDER BY c.oid::regclass::text)
		FROM pg_class c WHERE c.relrowsecurity},
	partitions => q{
		SELECT string_agg(part || '=' || n, ',' ORDER BY part)
		FROM (SELECT tableoid::regclass::text AS part, count(*) AS n FROM gdprcrm.events GROUP BY 1) AS s},
	extension => q{
		SELECT e.extversion || ' ' || (SELECT fingerprint FROM gdprcrm.key_info()) || ' ' ||
		       (SELECT last_value FROM gdprcrm.people_id_seq)
		FROM pg_extension e WHERE e.extname = 'gdprcrm'},
);
for my $purpose (qw(operations marketing profiling records))
{
	$queries{"filtered_$purpose"} = qq{
		SET ROLE crm_app; SET gdprcrm.purpose = '$purpose';
		SELECT format('%s / %s events / %s messages / %s notes',
		              (SELECT string_agg(external_id, ',' ORDER BY substr(external_id, 3)::int) FROM gdprcrm.people),
		              (SELECT count(*) FROM gdprcrm.events), (SELECT count(*) FROM gdprcrm.messages),
		              (SELECT count(*) FROM public.notes))};
}

sub answers
{
	my ($node) = @_;
	my %a = map { $_ => $node->safe_psql('postgres', $queries{$_}) } keys %queries;
	# Logged in as each application role, whose purpose comes from ALTER ROLE.
	for my $role (qw(crm_app crm_other))
	{
		$a{"login_$role"} = $node->safe_psql('postgres', q{
			SELECT format('purpose %s, projects %s, people of projects %s',
			              current_setting('gdprcrm.purpose'), gdprcrm.visible_projects(),
			              (SELECT string_agg(DISTINCT project_id::text, ',') FROM gdprcrm.people))},
			extra_params => [ '-U', $role ]);
	}
	return \%a;
}

my $before = answers($old);

# The old cluster holds exactly what was written (the plaintexts come from
# the test here, not from the server).
my $canary = 'CANA' . 'RY';
is($before->{people}, join("\n",
	(map { $_ == 12 ? "u-12|-|-|-|t" : "u-$_|$canary-Person$_\@Example.org|$canary-name-u-$_|$canary-phone-u-$_|f" } 1 .. 30),
	(map { "g-$_|$canary-globex$_\@example.org|-|-|f" } 1 .. 3)),
	'old cluster: every person decrypts to what was written, u-12 is erased');
is($before->{messages}, join("\n",
	map { $_ == 12 ? "u-12|-|-" : "u-$_|$canary-subject-u-$_|$canary-body-u-$_" } 1 .. 30),
	'old cluster: every message decrypts');
is($before->{notes}, join("\n",
	map { $_ == 12 ? "u-12|-|-|-" : "u-$_|$canary-note-u-$_|$canary-extra-u-$_|$canary-blob-u-$_" } 1 .. 30),
	'old cluster: every note decrypts, in all three types');
is($before->{lookups}, join(',', map { "u-$_=u-$_" } 1 .. 30),
	'old cluster: blind indexes find every person by email and by external id');
like($before->{consent}, qr/^u-7 marketing: hidden: "marketing" needs consent.*\(false\)$/m,
	'old cluster: a withdrawal counts');
like($before->{consent}, qr/^u-11 records: visible:.*\(true\)$/m,
	'old cluster: a restricted subject is visible to a purpose allowed under restriction');
like($before->{filtered_marketing}, qr{^u-1,u-2,u-4,u-9,u-10,u-13,u-14,u-15,u-16,u-17,u-18,u-19,u-20 / },
	'old cluster: the marketing filter shows the consenting, unrestricted, not objecting, not erased people');
like($before->{policies}, qr/public \| notes \| gdprcrm_purpose \| RESTRICTIVE/,
	'old cluster: the purpose filter of the own table is among the policies');
like($before->{partitions}, qr/^gdprcrm\.events_2026_01=\d+,gdprcrm\.events_2026_02=\d+,gdprcrm\.events_2026_03=\d+,gdprcrm\.events_default=3$/,
	'old cluster: events in three monthly partitions and the default one');
is($before->{login_crm_app}, 'purpose operations, projects {1}, people of projects 1',
	'old cluster: crm_app reaches its project only');
is($before->{login_crm_other}, 'purpose records, projects {2}, people of projects 2',
	'old cluster: crm_other reaches its project only');

# A logical dump of everything, to compare with the upgraded cluster's.
my $tempdir = PostgreSQL::Test::Utils::tempdir();
$old->command_ok([ 'pg_dumpall', '--no-sync', '-d', $old->connstr('postgres'), '-f', "$tempdir/before.sql" ],
	'pg_dumpall of the old cluster');
my $superuser = $old->safe_psql('postgres', 'SELECT current_user');
$old->stop;

# The new cluster: same binaries, same preload and key command.
my $new = preloaded_node('new', key_command => $key_command);
my $bindir = $new->config_data('--bindir');
my @upgrade = (
	'pg_upgrade', '--no-sync',
	'-d', $old->data_dir, '-D', $new->data_dir,
	'-b', $bindir, '-B', $bindir,
	'-s', $new->host, '-p', $old->port, '-P', $new->port,
	'-U', $superuser);

# pg_upgrade writes some files into its working directory.
my $workdir = PostgreSQL::Test::Utils::tempdir();
my $cwd = getcwd();
chdir $workdir or die "could not change to $workdir: $!";
command_ok([ @upgrade, '--check' ], 'pg_upgrade --check accepts both clusters');
is(key_command_runs(), 1, 'pg_upgrade --check ran no key command');

# The real run, in copy mode (the default), keeping its logs and dumps.
my ($stdout, $stderr) = ('', '');
my $upgraded = IPC::Run::run([ @upgrade, '--retain' ], '>', \$stdout, '2>', \$stderr);
ok($upgraded, 'pg_upgrade copies the old cluster into the new one');
diag("pg_upgrade:\n$stdout$stderr") unless $upgraded;
is(key_command_runs(), 1, 'pg_upgrade ran no key command in any of its server starts');
chdir $cwd or die "could not change to $cwd: $!";

# What pg_upgrade leaves: its output, logs, SQL and dumps (the custom-format
# dumps are compressed, so they are read through pg_restore).
my @left = ([ 'pg_upgrade output', $stdout . $stderr ]);
find(
	{
		no_chdir => 1,
		wanted => sub {
			my $file = $_;
			return unless -f $file;
			push @left, [ $file, $file =~ /\.custom$/ ? run_pg_restore($file) : slurp_file($file) ];
		}
	},
	$new->data_dir . '/pg_upgrade_output.d', $workdir);

sub run_pg_restore
{
	my ($file) = @_;
	my ($out, $err) = run_command([ 'pg_restore', '-f', '-', $file ]);
	return $out;
}
ok(scalar(grep { $_->[0] =~ /pg_upgrade_server\.log$/ } @left), 'pg_upgrade kept its server log');
my ($server_log) = map { $_->[1] } grep { $_->[0] =~ /pg_upgrade_server\.log$/ } @left;
unlike($server_log, qr/(WARNING|ERROR|FATAL|PANIC):  /,
	'pg_upgrade\'s servers logged no warning or error (gdprcrm.* settings stay quiet placeholders)');
ok(!-e $new->data_dir . '/gdprcrm_dev_root.key', 'no development key file was made in the new cluster');

# Binary-upgrade mode by hand, as pg_upgrade runs the server: still no key
# command, and what needs a key fails cleanly instead of using none.
$new->command_ok([ 'pg_ctl', '-D', $new->data_dir, '-l', $new->logfile, '-o', '-b', '-w', 'start' ],
	'the upgraded cluster starts in binary-upgrade mode');
is(key_command_runs(), 1, 'binary-upgrade mode runs no key command');
my ($ret, $out, $err) = $new->psql('postgres', "\\set VERBOSITY verbose\n"
	  . "SELECT gdprcrm.decrypt(email, 'crm.people.email', id) FROM gdprcrm.people WHERE external_id = 'u-1'");
isnt($ret, 0, 'binary-upgrade mode: decryption fails');
like($err, qr/ERROR:  55000: gdprcrm keys are not loaded in binary-upgrade mode/,
	'with SQLSTATE 55000 and a message naming binary-upgrade mode');
($ret, $out, $err) = $new->psql('postgres', q{SELECT gdprcrm.blind_index('x', 'email')});
like($err, qr/gdprcrm keys are not loaded in binary-upgrade mode/, 'binary-upgrade mode: blind indexes fail the same way');
is($new->safe_psql('postgres', q{
	SET ROLE crm_app; SET gdprcrm.purpose = 'operations'; SELECT count(*) FROM gdprcrm.people}),
	'0', 'binary-upgrade mode: row filters hide every row');
$new->command_ok([ 'pg_ctl', '-D', $new->data_dir, '-m', 'fast', '-w', 'stop' ],
	'the binary-upgrade mode server stops');

# A normal start: everything is back.
$new->start;
is(key_command_runs(), 2, 'a normal start of the new cluster runs the key command once');
my $after = answers($new);
for my $name (sort keys %queries, 'login_crm_app', 'login_crm_other')
{
	# Compared without printing: the answers hold the test plaintexts.
	ok($after->{$name} eq $before->{$name}, "new cluster: same answer for $name")
	  or diag("$name differs after pg_upgrade");
}

$new->command_ok([ 'pg_dumpall', '--no-sync', '-d', $new->connstr('postgres'), '-f', "$tempdir/after.sql" ],
	'pg_dumpall of the new cluster');
# pg_dumpall fences each script with a random \restrict key: not content.
sub dump_content
{
	return slurp_file(shift) =~ s/^\\(un)?restrict \S+$//mgr;
}
ok(dump_content("$tempdir/before.sql") eq dump_content("$tempdir/after.sql"),
	'the dumps of both clusters are identical: every ciphertext, wrapped key and ledger row came along');

# The new cluster works: statistics, new people, new encryptions, erasure.
$new->command_ok([ 'vacuumdb', '--all', '--analyze-in-stages' ],
	'vacuumdb --analyze-in-stages, as pg_upgrade recommends');
is($new->safe_psql('postgres', q{
	SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(1, 'u-7', 'cana' || 'ry-person7@example.ORG') = id FROM gdprcrm.people WHERE external_id = 'u-7'}),
	't', 'identify finds an upgraded person by external id and email');
is($new->safe_psql('postgres', q{
	SET ROLE crm_app; SET gdprcrm.purpose = 'operations';
	SELECT gdprcrm.identify(1, 'u-new', 'CANA' || 'RY-new@example.org');
	SELECT gdprcrm.decrypt(email, 'crm.people.email', id) = 'CANA' || 'RY-new@example.org'
	FROM gdprcrm.people WHERE external_id = 'u-new'}),
	"34\nt", 'a new person is encrypted and decrypted');
is($new->safe_psql('postgres', q{SELECT last_value FROM gdprcrm.people_id_seq}), '34',
	'the people sequence continued where it was');
($ret, $out, $err) = $new->psql('postgres',
	q{SELECT gdprcrm.encrypt(id, 'again', 'crm.people.name') FROM gdprcrm.people WHERE external_id = 'u-12'});
like($err, qr/cannot encrypt a value for an erased subject/, 'the erased subject cannot come back');
is($new->safe_psql('postgres', q{
	SELECT gdprcrm.withdraw_consent(id, 'marketing') > 0 FROM gdprcrm.people WHERE external_id = 'u-1';
	SET ROLE crm_app; SET gdprcrm.purpose = 'marketing';
	SELECT count(*) FROM gdprcrm.people WHERE external_id = 'u-1'}),
	"t\n0", 'a withdrawal after the upgrade hides the person at once');
$new->stop;

# No plaintext and no part of the root key anywhere a server or pg_upgrade wrote.
push @left, map { [ $_->name . ' server log', slurp_file($_->logfile) ] } $old, $new;
my @key_parts = log_fragments_of($key);
for my $item (@left)
{
	my ($name, $text) = @$item;
	my $leaks = ($text =~ /$canary/ ? 1 : 0) + scalar(grep { index($text, $_) >= 0 } @key_parts);
	is($leaks, 0, "no plaintext and no key fragment in $name");
}

done_testing();
