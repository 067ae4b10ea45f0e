<?php
// Managed by schoolctl: a course's pads. Lists them, lets teachers create one, and opens one by creating
// an Etherpad session for the person (cookie `sessionID` on the school's domain, which pad.<domain>
// reads) and sending them to the pad. Nothing here opens a pad for someone who may not see the course.
require(__DIR__ . '/../../config.php');

use local_schoolpads\etherpad;

$courseid = required_param('id', PARAM_INT);
$open = optional_param('pad', '', PARAM_RAW);
$course = get_course($courseid);
require_login($course);
$context = context_course::instance($course->id);
require_capability('local/schoolpads:view', $context);
$cancreate = has_capability('local/schoolpads:create', $context);

$url = new moodle_url('/local/schoolpads/index.php', ['id' => $course->id]);
$PAGE->set_url($url);
$PAGE->set_context($context);
$PAGE->set_pagelayout($course->id == SITEID ? 'standard' : 'incourse');
$PAGE->set_title(get_string('pads', 'local_schoolpads'));
$PAGE->set_heading(format_string($course->fullname));

$config = get_config('local_schoolpads');
$group = etherpad::group($course->id);
$pads = etherpad::pads($group);

if ($open !== '') {
    if (!array_key_exists($open, $pads)) {
        throw new moodle_exception('nopad', 'local_schoolpads');
    }
    // Etherpad accepts several sessions in one cookie (comma separated): keep the ones still there
    // (other courses' pads open in other tabs), newest first, at most ten.
    $until = time() + 8 * HOURSECS;
    $session = etherpad::session($group, etherpad::author($USER), $until);
    $old = preg_grep('/^s\.[0-9a-zA-Z]{16}$/', explode(',', $_COOKIE['sessionID'] ?? ''));
    $sessions = array_slice(array_unique(array_merge([$session], $old)), 0, 10);
    setcookie('sessionID', implode(',', $sessions), ['expires' => $until, 'path' => '/',
        'domain' => $config->cookiedomain, 'secure' => true, 'httponly' => false, 'samesite' => 'Lax']);
    redirect(rtrim($config->padurl, '/') . '/p/' . rawurlencode($open));
}

if ($cancreate && ($name = optional_param('name', '', PARAM_TEXT)) !== '' && confirm_sesskey()) {
    // Etherpad pad names: letters, digits, '-' and '_' (the rest would need escaping in URLs).
    $name = trim(preg_replace('/[^A-Za-z0-9_-]+/', '-', core_text::specialtoascii($name)), '-');
    if ($name !== '' && !in_array($name, $pads, true)) {
        etherpad::call('createGroupPad', ['groupID' => $group, 'padName' => $name]);
    }
    redirect($url);
}

echo $OUTPUT->header();
echo $OUTPUT->heading(get_string('pads', 'local_schoolpads'));
echo html_writer::tag('p', get_string('intro', 'local_schoolpads'));
if ($pads) {
    $items = [];
    foreach ($pads as $padid => $name) {
        $items[] = html_writer::link(new moodle_url($url, ['pad' => $padid]), s($name), ['target' => '_blank']);
    }
    echo html_writer::alist($items, ['class' => 'local-schoolpads-list']);
} else {
    echo $OUTPUT->notification(get_string('nopads', 'local_schoolpads'), 'info');
}
if ($cancreate) {
    echo html_writer::start_tag('form', ['method' => 'post', 'action' => $url->out(false), 'class' => 'form-inline']);
    echo html_writer::empty_tag('input', ['type' => 'hidden', 'name' => 'sesskey', 'value' => sesskey()]);
    echo html_writer::label(get_string('newpad', 'local_schoolpads'), 'local-schoolpads-name', true, ['class' => 'mr-2']);
    echo html_writer::empty_tag('input', ['type' => 'text', 'name' => 'name', 'id' => 'local-schoolpads-name',
        'maxlength' => 50, 'required' => 'required', 'pattern' => '[A-Za-z0-9_ -]+', 'class' => 'form-control mr-2']);
    echo html_writer::empty_tag('input', ['type' => 'submit', 'value' => get_string('create'),
        'class' => 'btn btn-primary']);
    echo html_writer::end_tag('form');
}
echo $OUTPUT->footer();
