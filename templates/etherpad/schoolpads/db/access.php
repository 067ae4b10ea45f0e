<?php
// Who may open a course's pads (everyone enrolled; on the front page every logged-in person) and who
// may create one (teachers; on the front page course creators, which the school's teachers are).
defined('MOODLE_INTERNAL') || die();

$capabilities = [
    'local/schoolpads:view' => [
        'captype' => 'read',
        'contextlevel' => CONTEXT_COURSE,
        'archetypes' => ['frontpage' => CAP_ALLOW, 'student' => CAP_ALLOW, 'teacher' => CAP_ALLOW,
            'editingteacher' => CAP_ALLOW, 'manager' => CAP_ALLOW],
    ],
    'local/schoolpads:create' => [
        'captype' => 'write',
        'riskbitmask' => RISK_SPAM,
        'contextlevel' => CONTEXT_COURSE,
        'archetypes' => ['teacher' => CAP_ALLOW, 'editingteacher' => CAP_ALLOW, 'coursecreator' => CAP_ALLOW,
            'manager' => CAP_ALLOW],
    ],
];
