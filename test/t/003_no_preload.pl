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

done_testing();
