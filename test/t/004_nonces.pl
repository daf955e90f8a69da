# Two backends forked from one postmaster draw a million nonces each at the
# same time; no nonce repeats, within or across them.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $per_backend = 1_000_000;
my $node = preloaded_node('nonces', key_command => key_file_command(random_key_hex()));
$node->start;
$node->safe_psql('postgres', q{
	CREATE EXTENSION gdprcrm;
	CREATE UNLOGGED TABLE nonces (nonce bytea NOT NULL, backend int NOT NULL);
});

# Both sessions connect first and wait on an advisory lock, so that both
# are forked before either draws, then draw at the same time.
$node->safe_psql('postgres', 'SELECT 1');
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(42)');

my @runs;
for my $n (1 .. 2)
{
	my ($out, $err) = ('', '');
	my $sql = "SELECT pg_advisory_lock_shared(42); "
	  . "INSERT INTO nonces SELECT gdprcrm.random_bytes(24), pg_backend_pid() "
	  . "FROM generate_series(1, $per_backend);";
	my $h = IPC::Run::start([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err);
	push @runs, [ $h, \$err ];
}
$node->poll_query_until('postgres',
	"SELECT count(*) = 2 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
  or die 'the drawing sessions did not reach the gate';
$gate->query_safe('SELECT pg_advisory_unlock(42)');

for my $run (@runs)
{
	my ($h, $err) = @$run;
	$h->finish;
	is($h->result(0), 0, 'a backend drew its nonces') or diag $$err;
}
$gate->quit;

my $result = $node->safe_psql('postgres',
	'SELECT count(*), count(DISTINCT nonce), count(DISTINCT backend) FROM nonces');
is($result, join('|', 2 * $per_backend, 2 * $per_backend, 2),
	"2 backends x $per_backend nonces: all distinct");

$node->stop;
done_testing();
