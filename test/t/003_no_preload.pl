# Without shared_preload_libraries the extension installs, functions that
# need no key work, and every key-using function fails with SQLSTATE 55000
# and a hint naming shared_preload_libraries.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('no_preload');
$node->init;
$node->start;

$node->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
pass('CREATE EXTENSION works without preload');

is($node->safe_psql('postgres', 'SELECT length(gdprcrm.random_bytes(24))'),
	'24', 'random_bytes needs no key and works without preload');

my ($ret, $out, $err) = $node->psql('postgres',
	"\\set VERBOSITY verbose\nSELECT * FROM gdprcrm.key_info();");
isnt($ret, 0, 'key_info fails without preload');
like($err, qr/ERROR:  55000: gdprcrm keys are not loaded/, 'with SQLSTATE 55000 (object not in prerequisite state)');
like($err, qr/HINT:  Add gdprcrm to shared_preload_libraries/, 'and a hint naming shared_preload_libraries');

ok(!-e $node->data_dir . '/gdprcrm_dev_root.key', 'no key file is created without preload');
$node->stop;

# Without preload gdprcrm's WAL resource manager is not registered, so
# recovery could not replay a record of it: changes of consent, purposes
# and erasure must write none.  wal_level replica, PostgreSQL's default,
# is when gdprcrm announces such changes to standbys.
my $replica = PostgreSQL::Test::Cluster->new('no_preload_replica');
$replica->init(allows_streaming => 1);
$replica->start;
$replica->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	SELECT gdprcrm.define_purpose('support', 'contract', 'Answering requests');
	SELECT gdprcrm.shred_subject_key(42);
});
$replica->stop('immediate');
my $restarted = $replica->start(fail_ok => 1);
ok($restarted, 'after a crash, recovery replays what gdprcrm wrote without preload');
SKIP:
{
	skip 'the server did not start', 1 unless $restarted;
	is($replica->safe_psql('postgres',
			'SELECT count(*) FROM gdprcrm.subject_state WHERE erased_at IS NOT NULL'),
		'1', 'and the erasure is kept');
	$replica->stop;
}

done_testing();
