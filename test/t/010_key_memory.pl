# Where a backend keeps unwrapped keys (doc/security.md, "Where unwrapped
# keys live").  gdprcrm.key_memory() reports each area as locked and left out
# of core dumps, and the kernel's own view of the backend agrees: the
# mappings in /proc/<pid>/smaps and the locked total in /proc/<pid>/status.
# Keys the cache evicts or flushes, and a buffer an error left behind, are
# zeroed, read back through /proc/<pid>/mem.  With a locked-memory limit that fits the root keys but
# not the cache, the server starts, the cache is used unlocked but still out
# of core dumps, one line is logged, and values still decrypt; with no
# locked memory at all, the server does not start.
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
my $chunk = 4096 * 32;    # subject_keys.c: SLAB_CHUNK_KEYS keys of 32 bytes

# The soft RLIMIT_MEMLOCK of a process in bytes; undef when unlimited.
sub memlock_limit
{
	my ($pid) = @_;
	my $limits = slurp_file("/proc/$pid/limits");
	$limits =~ /^Max locked memory\s+(\S+)/m or die "no memlock line for $pid";
	return $1 eq 'unlimited' ? undef : $1;
}

# Anonymous, accessible mappings marked "dd" (left out of core dumps): in a
# backend, gdprcrm's key regions and the random generator's state.
sub dump_excluded
{
	my @maps = @_;
	return grep {
		$_->{name} eq '' && $_->{perms} ne '---p' && $_->{flags}{dd}
	} @maps;
}

sub size_of { return $_[0]->{end} - $_[0]->{start} }

# How many 32-byte slots of the given mappings are not all zero, read from
# /proc/<pid>/mem; undef if this test may not read the backend's memory.
sub nonzero_slots
{
	my ($pid, @maps) = @_;
	my $count = 0;
	open my $mem, '<:raw', "/proc/$pid/mem" or return undef;
	for my $map (@maps)
	{
		my $len = size_of($map);
		sysseek($mem, $map->{start}, 0) or return undef;
		my $got = sysread($mem, my $buf, $len);
		return undef unless defined $got && $got == $len;
		for (my $off = 0; $off < $len; $off += 32)
		{
			$count++ if substr($buf, $off, 32) ne "\0" x 32;
		}
	}
	close $mem;
	return $count;
}

# gdprcrm.key_memory() as { area => "bytes locked excluded" }, rows of one
# area joined by ", ".  Where the server may not lock all of it ($lockable
# false), the locked column is left out.
sub key_memory
{
	my ($session, $lockable) = @_;
	my %areas;
	for my $row (split /\n/, $session->query_safe(
			'SELECT area, bytes, locked, excluded_from_dumps FROM gdprcrm.key_memory()'))
	{
		my ($area, $bytes, $locked, $excluded) = split /\|/, $row;
		$areas{$area} = join ', ', grep { defined } $areas{$area},
		  join ' ', $bytes, ($lockable ? ($locked) : ()), $excluded;
	}
	return \%areas;
}

sub locked_kb
{
	my ($pid) = @_;
	slurp_file("/proc/$pid/status") =~ /^VmLck:\s+(\d+) kB/m or die "no VmLck";
	return $1;
}

# The random generator's state: a 4 kB block, its key and bookkeeping.
my $generator = int((4096 + 48 + $page - 1) / $page) * $page;
my $needed = 3 * $page + 2 * $chunk + $generator;    # root, database keys, pool, cache, generator

#
# An ordinary limit.
#
my $node = preloaded_node('key_memory', key_command => key_file_command(random_key_hex()));
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
# The postmaster's limit, which every backend inherits: a backend of
# safe_psql may be gone by the time /proc is read.
my $limit = memlock_limit((split /\n/, slurp_file($node->data_dir . '/postmaster.pid'))[0]);
my $can_lock = !defined $limit || $limit >= $needed + $page;
note 'locked-memory limit of the server: ' . ($limit // 'unlimited');

my $session = $node->background_psql('postgres');
my $pid = $session->query_safe('SELECT pg_backend_pid()');

# Expected rows: every area locked (where the limit allows) and excluded.
my $row = sub { join ' ', $_[0], ($can_lock ? ('t') : ()), 't' };

is_deeply(key_memory($session, $can_lock), { 'root keys' => $row->($page) },
	'a new backend holds only the root keys it inherited, locked again after the fork, excluded from dumps');

is($session->query_safe(q{
	SELECT count(*) FROM generate_series(1, 5000) AS g
	WHERE gdprcrm.decrypt(gdprcrm.encrypt(g, 'value ' || g, 'test'), 'test') = 'value ' || g}),
	'5000', 'values of 5000 subjects round-trip');
$session->query_safe(q{SELECT gdprcrm.blind_index('ada@example.org', 'email')});

is_deeply(key_memory($session, $can_lock), {
		'root keys' => $row->($page),
		'database keys' => $row->($page),
		'subject key cache' => $row->(2 * $chunk),
		'transient buffers' => $row->($page),
		'random generator' => $row->($generator),
	},
	'key_memory(): every area locked and excluded from dumps; 5000 keys take two chunks of the cache');

# The kernel's view, read by this test rather than by the backend.
my @maps = mappings($pid);
my @chunks = grep { size_of($_) == $chunk } dump_excluded(@maps);
is(scalar @chunks, 2, 'smaps: two cache chunks, each its own mapping, marked dd');
my ($root) = grep { $_->{perms} eq 'r--p' && size_of($_) == $page } dump_excluded(@maps);
ok($root, 'smaps: a read-only page marked dd holds the root keys');
my @pages = grep { $_->{perms} eq 'rw-p' && size_of($_) == $page } dump_excluded(@maps);
is(scalar @pages, 2, 'smaps: two writable pages marked dd (database keys, transient buffers)');
SKIP:
{
	skip 'the kernel has no MADV_WIPEONFORK', 2 unless grep { $_->{flags}{wf} } @maps;
	is(scalar(grep { $_->{flags}{wf} } @chunks, @pages), 4,
		'smaps: the cache and the writable pages are wiped in a child of fork(2) (wf)');
	ok(!$root->{flags}{wf}, 'smaps: the root keys are not: backends inherit them');
}
SKIP:
{
	skip 'the server may not lock the cache', 3 unless $can_lock;
	is(scalar(grep { $_->{flags}{lo} } @chunks, @pages, $root), 5, 'smaps: all of them locked (lo)');
	is(locked_kb($pid) * 1024, $needed, 'status: the backend locks exactly what key_memory() reports');
	ok(!grep({ $_->{flags}{lo} && !$_->{flags}{dd} } @maps), 'smaps: no locked mapping is left in core dumps');
}

my ($ret, $out, $err) = $node->psql('postgres', q{
	CREATE ROLE key_memory_app;
	SET ROLE key_memory_app;
	SELECT * FROM gdprcrm.key_memory();});
like($err, qr/permission denied for function key_memory/, 'key_memory() is for superusers only');

# Zeroing, seen from outside the backend.
SKIP:
{
	my $before = nonzero_slots($pid, @chunks);
	skip 'this test may not read the backend memory', 6 unless defined $before;
	is($before, 5000, 'mem: the cache chunks hold 5000 keys');

	$session->query_safe(q{SET gdprcrm.key_cache_size = 1000});
	$session->query_safe(q{SELECT gdprcrm.encrypt(5001, 'one more', 'test')});
	is(nonzero_slots($pid, @chunks), 1000, 'mem: eviction down to key_cache_size zeroes the evicted keys');

	# A committed erasure elsewhere flushes this backend's cache at its next use.
	$node->safe_psql('postgres', 'SELECT gdprcrm.shred_subject_key(1)');
	is($session->query_safe(q{SELECT gdprcrm.decrypt(gdprcrm.encrypt(2, 'after', 'test'), 'test')}),
		'after', 'a value decrypts after the flush');
	is(nonzero_slots($pid, @chunks), 1, 'mem: the flush zeroed every cached key; one was loaded again');

	# Many new keys at once go through a transient buffer of their own.
	is($session->query_safe(q{
		SELECT gdprcrm.create_subject_keys(array_agg(g)) FROM generate_series(20001, 23000) AS g}),
		'3000', 'create_subject_keys() made 3000 keys');
	my @after = dump_excluded(mappings($pid));
	is_deeply([ sort map { nonzero_slots($pid, $_) } grep { $_->{perms} eq 'rw-p' && size_of($_) == $page } @after ],
		[ 0, 1 ], 'mem: the transient pool is zeroed after use; the database key page holds its one key');
}
my $transient = int((3000 * 32 + $page - 1) / $page) * $page;
ok(!grep({ size_of($_) == $transient } dump_excluded(mappings($pid)))
	  && key_memory($session, $can_lock)->{'transient buffers'} eq $row->($page),
	'the buffer of create_subject_keys() is unmapped when freed: only the pool is left');
$session->quit;
$node->stop;

#
# A buffer that an error leaves behind is zeroed when its memory context is
# reset.  Without preload, encrypt() for a new subject draws the key into a
# transient buffer and then fails to wrap it (there is no root key): only
# the reset of the failed statement's memory can zero and release it.
#
my $plain = PostgreSQL::Test::Cluster->new('key_memory_no_preload');
$plain->init;
$plain->start;
$plain->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
my $failing = $plain->background_psql('postgres', on_error_stop => 0);
my $failing_pid = $failing->query_safe('SELECT pg_backend_pid()');
for my $attempt (1 .. 2)
{
	$failing->query(q{SELECT gdprcrm.encrypt(1, 'x', 'test')});
	like($failing->{stderr}, qr/gdprcrm keys are not loaded/, "encrypt() without preload fails (attempt $attempt)");
}
my @pool = grep { $_->{perms} eq 'rw-p' && size_of($_) == $page } dump_excluded(mappings($failing_pid));
is(scalar @pool, 1, 'smaps: the failed calls left one pool page and no other buffer');
SKIP:
{
	my $left = nonzero_slots($failing_pid, @pool);
	skip 'this test may not read the backend memory', 1 unless defined $left;
	is($left, 0, 'mem: the key drawn before each error was zeroed by the reset of its memory context');
}
$failing->quit;
$plain->stop;

#
# A limit that fits the root keys but not the cache; then none at all.
#
SKIP:
{
	my $own = memlock_limit($$);
	skip 'prlimit(1) is not available', 10 unless system('prlimit --version >/dev/null 2>&1') == 0;
	skip 'the limit is already below 64 kB', 10 if defined $own && $own < 65536;

	my $small = preloaded_node('key_memory_small', key_command => key_file_command(random_key_hex()));
	system('prlimit', '--pid', $$, '--memlock=65536:') == 0 or die 'prlimit failed';
	$small->start;
	$small->safe_psql('postgres', 'CREATE EXTENSION gdprcrm');
	my $low = $small->background_psql('postgres');
	my $low_pid = $low->query_safe('SELECT pg_backend_pid()');
	is(memlock_limit($low_pid), 65536, 'the second server runs with a 64 kB limit');

	is($low->query_safe(q{
		SELECT count(*) FROM generate_series(1, 5000) AS g
		WHERE gdprcrm.decrypt(gdprcrm.encrypt(g, 'CANARY-' || g, 'test'), 'test') = 'CANARY-' || g}),
		'5000', 'values still round-trip with the cache unlocked');
	$low->query_safe(q{SELECT gdprcrm.blind_index('ada@example.org', 'email')});
	$low->query_safe(q{SELECT gdprcrm.create_subject_keys(array_agg(g)) FROM generate_series(20001, 23000) AS g});
	is_deeply(key_memory($low, 1), {
			'root keys' => "$page t t",
			'database keys' => "$page t t",
			'subject key cache' => 2 * $chunk . ' f t',
			'transient buffers' => "$page t t",
			'random generator' => "$generator t t",
		},
		'key_memory(): the cache is not locked but still excluded from dumps; the small areas are locked');
	my @low_chunks = grep { size_of($_) == $chunk } dump_excluded(mappings($low_pid));
	is(scalar(grep { $_->{flags}{dd} && !$_->{flags}{lo} } @low_chunks), 2,
		'smaps: both cache chunks marked dd, not lo');
	is(locked_kb($low_pid) * 1024, 3 * $page + $generator,
		'status: the backend locks the three small areas and the generator only');
	$low->quit;
	$small->stop;

	my $log = slurp_file($small->logfile);
	my @lines = $log =~ /^.*could not lock gdprcrm key memory.*$/mg;
	is(scalar @lines, 1, 'one line in the log for the backend, however many chunks it could not lock');
	like($log, qr/HINT:  Raise the locked-memory limit of the server \(LimitMEMLOCK for systemd, ulimit -l\)/,
		'with a hint naming LimitMEMLOCK');
	# The framework logs every statement; what must not follow our line is
	# the text of the statement that triggered it.
	unlike($log, qr/STATEMENT:/, 'the log line does not quote the statement');

	# No locked memory at all: the root keys cannot be locked, the server stops.
	system('prlimit', '--pid', $$, '--memlock=0:') == 0 or die 'prlimit failed';
	my $started = $small->start(fail_ok => 1);
	system('prlimit', '--pid', $$, '--memlock=' . ($own // 'unlimited') . ':') == 0
	  or die 'prlimit failed';
	ok(!$started, 'without locked memory the server does not start');
	like(slurp_file($small->logfile), qr/FATAL:  could not allocate locked memory for the gdprcrm keys/,
		'and says why');
}

done_testing();
