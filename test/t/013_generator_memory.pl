# The random generator's state (src/csprng.c) holds the next subject and
# database keys a backend draws, in plain, before they are drawn: the bytes
# still unread in its block are the next keys, and its ChaCha20 key yields
# every block after that until the backend exits.  So it is key memory like
# the cache: out of core dumps, wiped in a forked child, and locked where the
# locked-memory limit allows, or the kernel may write the next keys to swap.
# The test reads the state through /proc/<pid>/mem, predicts the key that
# create_subject_keys() draws next, finds exactly those bytes in the cache,
# and checks how the kernel keeps the state's pages.
use strict;
use warnings;
no warnings 'portable';    # 64-bit addresses in hex

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

plan skip_all => 'needs Linux /proc' unless -r '/proc/self/smaps';

my $page = POSIX::sysconf(POSIX::_SC_PAGESIZE);

# csprng.c: CsprngState is an int, a size_t and a 32-byte key, then the block.
my $block_bytes = 4096;
my $block_offset = 48;
my $state_pages = int(($block_offset + $block_bytes + $page - 1) / $page);

sub read_mem
{
	my ($pid, $start, $len) = @_;
	open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
	sysseek($mem, $start, 0) or return undef;
	my $got = sysread($mem, my $buf, $len);
	close $mem;
	return defined $got && $got == $len ? $buf : undef;
}

my $node = preloaded_node('generator_memory', key_command => key_file_command(random_key_hex()));
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');

my $session = $node->background_psql('postgres');
my $pid = $session->query_safe('SELECT pg_backend_pid()');
my $limits = slurp_file("/proc/$pid/limits");
$limits =~ /^Max locked memory\s+(\S+)/m or die 'no memlock line';
my $can_lock = $1 eq 'unlimited' || $1 >= 1024 * 1024;

# The first encryption maps and seeds the generator.
$session->query_safe(q{SELECT gdprcrm.encrypt(1, 'x', 'test')});

# The generator's state: anonymous, writable, left out of dumps, not one of
# the guarded regions of secret_memory.c (those have a page of their own and
# are locked at this limit) and of the state's size.
my @state = grep {
	$_->{name} eq '' && $_->{perms} eq 'rw-p' && $_->{flags}{dd}
	  && $_->{end} - $_->{start} == $state_pages * $page
} mappings($pid);
is(scalar @state, 1, 'smaps: one mapping of the size of the generator state, marked dd');
my $state = $state[0];

SKIP:
{
	my $raw = read_mem($pid, $state->{start}, $block_offset + $block_bytes);
	skip 'this test may not read the backend memory', 1 unless defined $raw;
	my $unread = unpack('Q', substr($raw, 8, 8));
	skip 'fewer than 32 bytes left in the block', 1 if $unread < 32;
	my $next = substr($raw, $block_offset + $block_bytes - $unread, 32);

	$session->query_safe(q{SELECT gdprcrm.create_subject_keys(ARRAY[900001]::bigint[])});
	my $found = 0;
	for my $chunk (grep { $_->{end} - $_->{start} == 4096 * 32 && $_->{flags}{dd} } mappings($pid))
	{
		my $keys = read_mem($pid, $chunk->{start}, $chunk->{end} - $chunk->{start});
		$found++ if defined $keys && index($keys, $next) >= 0;
	}
	is($found, 1, 'mem: the next subject key was in the generator state before it was drawn');
}

SKIP:
{
	skip 'the server may not lock 1 MB', 1 unless $can_lock;
	ok($state->{flags}{lo}, 'smaps: the generator state, which holds the next keys, is locked (lo)');
}

$session->quit;
$node->stop;
done_testing();
