<?php
// Managed by schoolctl.
defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'School pads';
$string['pads'] = 'Pads';
$string['intro'] = 'Shared documents of this course, on the school\'s own Etherpad. Everyone who can see the course can read and write them.';
$string['nopads'] = 'This course has no pads yet.';
$string['newpad'] = 'New pad';
$string['nopad'] = 'This course has no pad by that name.';
$string['notconfigured'] = 'The school\'s Etherpad is not configured.';
$string['apierror'] = 'The school\'s Etherpad refused the request: {$a}';
$string['schoolpads:view'] = 'Open the course\'s pads';
$string['schoolpads:create'] = 'Create pads in the course';
$string['privacy:metadata:etherpad'] = 'Your name is shown to the others writing in a pad, on the school\'s own Etherpad server.';
$string['privacy:metadata:etherpad:username'] = 'Your username, which links you to your Etherpad author.';
$string['privacy:metadata:etherpad:fullname'] = 'Your full name, shown as the author of what you write.';
