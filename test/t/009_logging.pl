# What PostgreSQL itself writes to the server log: the context line of a
# refused COPY value and the text of a failing statement can carry a
# plaintext.  With the settings doc/operations.md recommends, neither
# reaches the log; with PostgreSQL's defaults both do, which is why the
# settings are recommended.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# Failing statements that carry plaintext: a refused COPY value, a literal,
# and a literal argument of EXECUTE.  (Bind parameters of the extended
# protocol, which psql does not send here, are kept out of the log by
# log_parameter_max_length_on_error = 0, PostgreSQL's default.)
sub provoke
{
	my ($node, $tag) = @_;
	my $copy_canary = "CANARY-$tag-copy\@example.org";
	my $literal_canary = "CANARY-$tag-literal\@example.org";
	my $exec_canary = "CANARY-$tag-execute\@example.org";

	$node->psql('postgres', "COPY plain_in FROM STDIN;\n$copy_canary\n\\.\n");
	$node->psql('postgres', "SET ROLE logging_app; SELECT gdprcrm.identify(2, NULL, '$literal_canary')");
	$node->psql('postgres',
		"PREPARE ident(text) AS SELECT gdprcrm.identify(2, NULL, \$1); SET ROLE logging_app; EXECUTE ident('$exec_canary')");
	return ($copy_canary, $literal_canary);
}

sub start_node
{
	my ($name, @settings) = @_;
	my $node = preloaded_node($name, key_command => key_file_command(random_key_hex()));
	$node->append_conf('postgresql.conf', $_) for @settings;
	$node->start;
	$node->safe_psql('postgres', q{
		CREATE EXTENSION gdprcrm;
		CREATE TABLE plain_in (email gdprcrm.encrypted_text);
		CREATE ROLE logging_app IN ROLE gdprcrm_app;
		SELECT gdprcrm.create_project('Mine', ARRAY['logging_app']::name[]);
		SELECT gdprcrm.create_project('Theirs', ARRAY['postgres']::name[]);
	});
	return $node;
}

# The test framework logs every statement; PostgreSQL's default is none.
my $defaults = start_node('defaults', "log_statement = none");
my ($copy, $literal) = provoke($defaults, 'defaults');
my $log = slurp_file($defaults->logfile);
like($log, qr/\Q$copy\E/, 'with PostgreSQL defaults, a refused COPY value is in the log context line');
like($log, qr/\Q$literal\E/, 'with PostgreSQL defaults, a failing statement is logged with its literals');
$defaults->stop;

my $recommended = start_node('recommended', "log_error_verbosity = terse",
	"log_min_error_statement = panic", "log_parameter_max_length_on_error = 0",
	"log_statement = none", "log_min_duration_statement = -1");
provoke($recommended, 'recommended');
$log = slurp_file($recommended->logfile);
like($log, qr/permission denied for this project/, 'the refusals are still logged');
unlike($log, qr/CANARY/, 'with the recommended settings, no plaintext reaches the log');
$recommended->stop;

done_testing();
