<?php
// Managed by schoolctl: the school's pads (Etherpad) from inside Moodle. See lib.php.
defined('MOODLE_INTERNAL') || die();

$plugin->component = 'local_schoolpads';
$plugin->version = 2026112300;
$plugin->requires = 2024100700;   // Moodle 4.5 LTS
$plugin->maturity = MATURITY_STABLE;
$plugin->release = '1.0';
