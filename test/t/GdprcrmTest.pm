# Shared helpers for gdprcrm's TAP tests.
#
# Nodes are PostgreSQL::Test::Cluster instances with gdprcrm preloaded.  Keys
# are handed over the way operators do it: a command that prints a key kept
# in a private file, never a key written into the configuration.
package GdprcrmTest;

use strict;
use warnings;

use Exporter 'import';
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;

our @EXPORT = qw(random_key_hex key_file_command preloaded_node log_fragments_of mappings);

# A fresh 256-bit key as 64 lower-case hex digits.
sub random_key_hex
{
	return join '', map { sprintf '%02x', int(rand(256)) } 1 .. 32;
}

# Store a key in a 0600 file and return a key command that prints it.
sub key_file_command
{
	my ($hex) = @_;
	my $path = PostgreSQL::Test::Utils::tempdir() . '/root.key';
	open my $fh, '>', $path or die "could not write $path: $!";
	print $fh "$hex\n";
	close $fh;
	chmod 0600, $path;
	return "cat $path";
}

# An initialised (not started) node with gdprcrm preloaded and, unless
# key_command is undef, the given key command.
sub preloaded_node
{
	my ($name, %opts) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'gdprcrm'");
	$node->append_conf('postgresql.conf', "gdprcrm.key_command = '$opts{key_command}'")
	  if defined $opts{key_command};
	return $node;
}

# Every window of 8 characters of a secret: if none occurs in a text, no
# meaningful part of the secret does.
sub log_fragments_of
{
	my ($secret) = @_;
	return map { substr($secret, $_, 8) } 0 .. length($secret) - 8;
}

# mappings(PID): the memory mappings of a process, from /proc/PID/smaps,
# each with start, end, perms, name and its VmFlags as a set.
sub mappings
{
	my ($pid) = @_;
	my (@maps, $current);
	open my $fh, '<', "/proc/$pid/smaps" or die "could not read smaps of $pid: $!";
	while (my $line = <$fh>)
	{
		if ($line =~ /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+ *(.*)$/)
		{
			$current = { start => hex($1), end => hex($2), perms => $3, name => $4, flags => {} };
			push @maps, $current;
		}
		elsif ($line =~ /^VmFlags:\s*(.*)$/)
		{
			$current->{flags} = { map { $_ => 1 } split ' ', $1 };
		}
	}
	close $fh;
	return @maps;
}

1;
