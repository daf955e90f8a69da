# The HTML subject access export in a real browser.  Headless Chromium
# renders the document of a subject whose name, events, messages and
# consents carry hostile markup, right-to-left text and emoji, takes a
# screenshot (tmp_check/sar_export.png), and dumps the DOM it built: every
# section is there, hostile content stayed text, the planted scripts never
# ran, and the right-to-left text and emoji came through.  The document
# is kept as tmp_check/sar.html.
use strict;
use warnings;

use FindBin;
use lib $FindBin::Bin;

use GdprcrmTest;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($chromium) = grep { -x $_ } map { "$_/chromium" } (split(/:/, $ENV{PATH} // ''), '/usr/bin');
plan skip_all => 'chromium is not installed (Debian package chromium, installed by test/deps.sh)'
  unless $chromium;

# Chromium wants a writable home, which the user running the tests may
# not have, and --no-sandbox when that user is root.
my $browser_home = PostgreSQL::Test::Utils::tempdir();

sub browse
{
	my (@args) = @_;
	local $ENV{HOME} = $browser_home;
	local $ENV{XDG_CONFIG_HOME} = "$browser_home/config";
	local $ENV{XDG_CACHE_HOME} = "$browser_home/cache";
	my ($out, $err) = ('', '');
	my $ok = eval {
		IPC::Run::run(
			[
				$chromium, '--headless',
				'--no-sandbox', '--disable-gpu',
				'--disable-dev-shm-usage', '--no-first-run',
				'--no-default-browser-check', '--disable-extensions',
				'--disable-background-networking', '--disable-sync',
				'--hide-scrollbars', "--user-data-dir=$browser_home/profile",
				'--virtual-time-budget=2000', @args
			],
			'<', \undef, '>', \$out, '2>', \$err,
			IPC::Run::timeout(180));
	};
	diag("chromium failed: " . ($@ || $err)) unless $ok;
	return $ok ? $out : undef;
}

# The detector first: a page whose script does run changes its title and
# adds an element, and the dumped DOM shows both.
my $control = PostgreSQL::Test::Utils::tempdir() . '/control.html';
open my $fh, '>', $control or die "could not write $control: $!";
print $fh "<!DOCTYPE html><html><head><title>control</title></head><body><p>x</p>"
  . "<script>document.title='pwned';"
  . "document.body.insertAdjacentHTML('beforeend','<p id=pwned>pwned</p>')</script></body></html>\n";
close $fh;
my $control_dom = browse('--dump-dom', "file://$control");
ok(defined $control_dom, 'chromium dumps the DOM of a page');
like($control_dom // '', qr{<title>pwned</title>}, 'a script that runs shows in the dumped title');
like($control_dom // '', qr{<p id="pwned">}, 'and in the dumped elements');

my $key = random_key_hex();
my $node = preloaded_node('sar_html', key_command => key_file_command($key));
$node->start;
$node->safe_psql('postgres',
	"CREATE DATABASE sar ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");

# The values are UTF-8 bytes (no "use utf8"), as psql sends them and as
# Chromium writes the DOM back.
my $name = q{<script>document.title='pwned'</script> Zoë عائشة שרה 😀};
my $planted = q{<script>document.body.insertAdjacentHTML('beforeend','<p id=pwned>pwned</p>')</script>};
$node->safe_psql(
	'sar', q{
	CREATE EXTENSION gdprcrm;
	SELECT gdprcrm.create_event_partitions('2026-01-01', '2026-03-01');
	SELECT gdprcrm.define_purpose('service', 'contract', 'Providing the service <you> asked for', interval '2 years');
	SELECT gdprcrm.define_purpose('newsletter', 'consent', 'Our newsletter 📰');
	SELECT gdprcrm.set_purpose_recipients('newsletter', ARRAY['Mail & <Co>', 'שירות דיוור']);
	SELECT gdprcrm.create_project('Acme & <Sons> "Ltd"');
});
my $subject = $node->safe_psql('sar',
	q{SELECT gdprcrm.identify(1, 'u-1', 'zoe@example.org', jsonb_build_object('city', 'القاهرة', 'note', '"><b>not bold</b>'))});
$node->safe_psql(
	'sar', qq{
	UPDATE gdprcrm.people SET name = gdprcrm.encrypt(id, \$n\$$name\$n\$, 'crm.people.name') WHERE id = $subject;
	SELECT gdprcrm.track(1, $subject, 'clicked', jsonb_build_object(
	    'label', '<img src=x onerror=alert(1)>',
	    'comment', '"><b>not bold</b>',
	    'greeting', 'مرحبا بالعالم 👋',
	    'hebrew', 'שלום עולם',
	    'script', \$p\$$planted\$p\$), '2026-01-10 10:00+00');
	SELECT gdprcrm.track_page_view(1, $subject, 'javascript:alert(1)', '<svg onload=alert(1)>',
	    'https://example.org/"><iframe src=https://evil.test>', '{}', '2026-01-11 10:00+00');
	SELECT gdprcrm.add_message(1, $subject, 'outbound', 'email',
	    \$m\$</td></tr></table><script>document.title='pwned'</script>\$m\$,
	    'أهلاً زوي، شكراً لك 🙏' || chr(10) || 'שורה שנייה');
	SELECT gdprcrm.add_enrichment(1, $subject, 'public <profile>', 'bio',
	    '{"bio": "<style>body { display: none }</style>"}');
	SELECT gdprcrm.grant_consent($subject, 'newsletter', '"><iframe src="https://evil.test">', 'checkbox');
});
my $html = $node->safe_psql('sar', "SELECT gdprcrm.sar_export_html($subject)");
# Kept beside the screenshot, to look at.
my $dir = $PostgreSQL::Test::Utils::tmp_check;
open $fh, '>:raw', "$dir/sar.html" or die "could not write $dir/sar.html: $!";
print $fh $html, "\n";
close $fh;

my $screenshot = "$dir/sar_export.png";
unlink $screenshot;
browse("--screenshot=$screenshot", '--window-size=1200,2000', "file://$dir/sar.html");
ok(-s $screenshot, 'chromium took a screenshot of the export');
open my $png, '<:raw', $screenshot;
my $magic = '';
read($png, $magic, 8) if $png;
is($magic, "\x89PNG\r\n\x1a\n", 'the screenshot is a PNG');

my $dom = browse('--window-size=1200,2000', '--dump-dom', "file://$dir/sar.html");
ok(defined $dom, 'chromium rendered the export');
$dom //= '';

foreach my $section (
	'Who we hold data about', 'What data we hold',
	'Why we use it', 'Since when, and for how long',
	'Where the data comes from', 'Who we share it with',
	'Messages', 'Events and page views',
	'Consent history', 'Restrictions of processing',
	'Other records', 'Automated decisions',
	'Your rights')
{
	like($dom, qr{<h2>\Q$section\E</h2>}, "section \"$section\" is in the rendered document");
}

# Hostile content stayed text: escaped in the DOM, no element made of it.
like($dom, qr{<title>Personal data held about &lt;script&gt;document\.title='pwned'&lt;/script&gt; Zoë},
	'the title shows the name as text');
unlike($dom, qr{<title>pwned</title>}, 'the planted script did not change the title');
unlike($dom, qr{ id="pwned"}, 'the planted script added no element');
unlike($dom, qr{<script}i, 'no script element in the rendered document');
unlike($dom, qr{<(img|iframe|svg|b)[\s>]}i, 'no element made of hostile values');
is(scalar(() = $dom =~ /<style/g), 1, 'only the document\'s own style sheet');
like($dom, qr{&lt;img src=x onerror=alert\(1\)&gt;}, 'an event property shows as text');
like($dom, qr{"&gt;&lt;b&gt;not bold&lt;/b&gt;}, 'a value breaking out of an attribute shows as text');
like($dom, qr{&lt;/td&gt;&lt;/tr&gt;&lt;/table&gt;&lt;script&gt;}, 'a message subject closing the table shows as text');
like($dom, qr{&lt;style&gt;body \{ display: none \}&lt;/style&gt;}, 'an enrichment holding a style sheet shows as text');
like($dom, qr{"&gt;&lt;iframe src="https://evil\.test"&gt;}, 'a consent source shows as text');
like($dom, qr{Acme &amp; &lt;Sons&gt; "Ltd"}, 'the project name shows as text');
like($dom, qr{<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'},
	'the Content-Security-Policy forbids scripts and external resources');

# Right-to-left text and emoji came through, isolated from the English
# around them.
like($dom, qr{Zoë عائشة שרה 😀}, 'the name in Latin, Arabic and Hebrew script with an emoji');
like($dom, qr{<bdi>مرحبا بالعالم 👋</bdi>}, 'an Arabic event property with an emoji, isolated');
like($dom, qr{<bdi>שלום עולם</bdi>}, 'a Hebrew event property, isolated');
like($dom, qr{<td class="body" dir="auto">أهلاً زوي، شكراً لك 🙏\nשורה שנייה</td>},
	'a message body in Arabic and Hebrew takes its direction from its text');
like($dom, qr{<bdi>القاهرة</bdi>}, 'an Arabic trait');
like($dom, qr{Mail &amp; &lt;Co&gt;, שירות דיוור}, 'recipients, one of them in Hebrew');

# Escaping alone keeps the scripts from running: without the policy, the
# same document still runs nothing.
(my $no_csp = $html) =~ s{<meta http-equiv="Content-Security-Policy"[^>]*>}{};
isnt($no_csp, $html, 'the policy can be taken out');
open $fh, '>:raw', "$dir/no_csp.html" or die "could not write $dir/no_csp.html: $!";
print $fh $no_csp, "\n";
close $fh;
my $no_csp_dom = browse('--dump-dom', "file://$dir/no_csp.html") // '';
like($no_csp_dom, qr{<title>Personal data held about &lt;script&gt;}, 'without the policy the title is intact');
unlike($no_csp_dom, qr{ id="pwned"|<script}i, 'and no planted script ran');

# The export was logged.
is($node->safe_psql('sar', "SELECT string_agg(detail, ',') FROM gdprcrm.rights_log WHERE subject = $subject"),
	'html', 'the export is in the rights log');

$node->stop;
done_testing();
