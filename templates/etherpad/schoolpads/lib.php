<?php
// Managed by schoolctl. local_schoolpads: each course (and the front page) has its own Etherpad group;
// people who may see the course open its pads through index.php, which creates an Etherpad session for
// them with the HTTP API (Etherpad itself opens no pad without one). Settings are forced in config.php:
// apiurl (Etherpad on loopback), apikey, padurl (https://pad.<domain>), cookiedomain (<domain>).
defined('MOODLE_INTERNAL') || die();

/**
 * Adds "Pads" to a course's navigation for those who may open its pads.
 */
function local_schoolpads_extend_navigation_course(navigation_node $navigation, stdClass $course,
        context_course $context): void {
    if (has_capability('local/schoolpads:view', $context)) {
        $navigation->add(get_string('pads', 'local_schoolpads'),
            new moodle_url('/local/schoolpads/index.php', ['id' => $course->id]),
            navigation_node::TYPE_CUSTOM, null, 'local_schoolpads', new pix_icon('i/edit', ''));
    }
}
