# gdprcrm.key_command: a good command loads the key; a command that fails,
# prints nothing or prints anything but one key stops the postmaster with a
# clear message, and what it printed appears nowhere in the log.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $key = random_key_hex();
my $node = preloaded_node('key_command', key_command => key_file_command($key));

# A good command: the server starts and reports the command as the source.
ok($node->start(fail_ok => 1), 'server starts with a key command that prints a key');
$node->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
is($node->safe_psql('postgres', 'SELECT source FROM gdprcrm.key_info()'),
	'command', 'key_info names the command as the source');
my $fingerprint = $node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()');
like($fingerprint, qr/^[0-9a-f]{32}$/, 'fingerprint is 32 hex digits');
my @leaks = grep { index($fingerprint, $_) >= 0 } log_fragments_of($key);
is(scalar @leaks, 0, 'fingerprint holds no fragment of the key');

# The same key gives the same fingerprint after a restart; no key file is
# created when a command is configured.
$node->restart;
is($node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()'),
	$fingerprint, 'fingerprint is stable across restarts');
ok(!-e $node->data_dir . '/gdprcrm_dev_root.key', 'no development key file with a key command');
$node->stop;

# Each bad command: [what it does, command, bytes it prints that must never
# reach the log, expected message].
my $canary = 'CANARY' . random_key_hex();
my @bad = (
	[ 'prints garbage', "echo $canary", $canary, qr/did not print a valid root key/ ],
	[ 'prints nothing', 'true', undef, qr/did not print a valid root key/ ],
	[ 'exits non-zero after a valid key', "echo $key; exit 3", $key, qr/gdprcrm.key_command failed/ ],
	[ 'fails to run', '/nonexistent/gdprcrm-key-tool', undef, qr/gdprcrm.key_command failed/ ],
	[ 'prints 63 hex digits', 'echo ' . substr($key, 1), substr($key, 1), qr/did not print a valid root key/ ],
	[ 'prints 66 hex digits', "echo ${key}ab", "${key}ab", qr/did not print a valid root key/ ],
	[ 'prints a key with a trailing space', "echo \"$key \"", $key, qr/did not print a valid root key/ ],
	[ 'prints two keys', "echo $key; echo $key", $key, qr/did not print a valid root key/ ],
	[ 'prints 64 non-hex characters', 'echo ' . ('zq' x 32), 'zq' x 32, qr/did not print a valid root key/ ],
	[ 'prints far too much', "yes $canary | head -c 100000", $canary, qr/did not print a valid root key/ ],
);

for my $case (@bad)
{
	my ($what, $command, $secret, $message) = @$case;
	$node->append_conf('postgresql.conf', "gdprcrm.key_command = '$command'");
	my $log_offset = -s $node->logfile;

	ok(!$node->start(fail_ok => 1), "server refuses to start when the key command $what");
	my $log = slurp_file($node->logfile, $log_offset);
	like($log, qr/FATAL:  .*$message/, "clear message when the key command $what");
	if (defined $secret)
	{
		my @found = grep { index($log, $_) >= 0 } log_fragments_of($secret);
		is(scalar @found, 0, "nothing the command printed is logged when it $what");
	}
}

# Back to a good command: the same key, the same fingerprint.
$node->append_conf('postgresql.conf', "gdprcrm.key_command = '" . key_file_command($key) . "'");
$node->start;
is($node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()'),
	$fingerprint, 'the good command loads the same key again');

# The key appears nowhere in the whole log of this node.
my @in_log = grep { index(slurp_file($node->logfile), $_) >= 0 } log_fragments_of($key);
is(scalar @in_log, 0, 'the root key never reached the server log');
$node->stop;

done_testing();
