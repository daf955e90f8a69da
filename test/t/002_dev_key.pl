# Without gdprcrm.key_command: a development key file, created once with
# mode 0600, kept unchanged across restarts, announced at every start, and
# refused when it is readable by others or damaged.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = preloaded_node('dev_key');
my $key_file = $node->data_dir . '/gdprcrm_dev_root.key';

$node->start;
ok(-f $key_file, 'first start creates the development key file');
is(sprintf('%04o', (stat $key_file)[2] & 07777), '0600', 'the key file has mode 0600');
my $key_text = slurp_file($key_file);
like($key_text, qr/^[0-9a-f]{64}\n\z/, 'the key file holds one 256-bit key in hex');
(my $key = $key_text) =~ s/\n//;
ok(!-e "$key_file.tmp", 'no temporary file is left behind');

$node->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
my $info = $node->safe_psql('postgres', 'SELECT fingerprint, source FROM gdprcrm.key_info()');
my ($fingerprint, $source) = split /\|/, $info;
is($source, 'development_file', 'key_info names the development file as the source');
my @leaks = grep { index($info, $_) >= 0 } log_fragments_of($key);
is(scalar @leaks, 0, 'key_info reveals no fragment of the key');

$node->restart;
is(slurp_file($key_file), $key_text, 'the key file is unchanged by a restart');
is($node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()'),
	$fingerprint, 'the same key is loaded after a restart');
my $log = slurp_file($node->logfile);
my $warnings = () = $log =~ /WARNING:  gdprcrm is using a development root key, which is not for production/g;
is($warnings, 2, 'every start logs that the development key is not for production');
$node->stop;

# A key file that others can read is refused, then accepted once private.
chmod 0644, $key_file;
my $offset = -s $node->logfile;
ok(!$node->start(fail_ok => 1), 'a key file readable by others stops the server');
like(slurp_file($node->logfile, $offset), qr/FATAL:  development key file .* is not a regular file private to its owner/,
	'with a message that says why');
chmod 0600, $key_file;

# A damaged key file is refused without echoing it and never replaced.
my $canary = 'CANARY' . random_key_hex();
open my $fh, '>', $key_file or die;
print $fh $canary;
close $fh;
$offset = -s $node->logfile;
ok(!$node->start(fail_ok => 1), 'a damaged key file stops the server');
$log = slurp_file($node->logfile, $offset);
like($log, qr/FATAL:  development key file .* does not hold a valid root key/, 'with a clear message');
is(scalar(grep { index($log, $_) >= 0 } log_fragments_of($canary)), 0, 'the damaged content is not logged');
is(slurp_file($key_file), $canary, 'the damaged file is left for the operator, not replaced');

# Restored from backup, it works again with the same fingerprint.
open $fh, '>', $key_file or die;
print $fh $key_text;
close $fh;
$node->start;
is($node->safe_psql('postgres', 'SELECT fingerprint FROM gdprcrm.key_info()'),
	$fingerprint, 'the restored key file loads the original key');
$node->stop;

# A crash while the file was being created leaves only the temporary file:
# the next start creates a whole key and removes nothing else.
my $fresh = preloaded_node('dev_key_after_crash');
open $fh, '>', $fresh->data_dir . '/gdprcrm_dev_root.key.tmp' or die;
print $fh substr(random_key_hex(), 0, 20);
close $fh;
$fresh->start;
like(slurp_file($fresh->data_dir . '/gdprcrm_dev_root.key'), qr/^[0-9a-f]{64}\n\z/,
	'a half-written temporary file does not prevent creating a whole key');
ok(!-e $fresh->data_dir . '/gdprcrm_dev_root.key.tmp', 'the temporary file was replaced by the key file');
$fresh->stop;

# The key never reached either log.
for my $n ($node, $fresh)
{
	my $k = slurp_file($n->data_dir . '/gdprcrm_dev_root.key');
	chomp $k;
	my @found = grep { index(slurp_file($n->logfile), $_) >= 0 } log_fragments_of($k);
	is(scalar @found, 0, 'the development key never reached the log of ' . $n->name);
}

done_testing();
