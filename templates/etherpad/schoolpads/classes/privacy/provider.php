<?php
// Managed by schoolctl: what local_schoolpads sends to the school's Etherpad (GDPR data registry).
namespace local_schoolpads\privacy;

use core_privacy\local\metadata\collection;

defined('MOODLE_INTERNAL') || die();

/**
 * Stores nothing in Moodle; a person's name goes to the school's own Etherpad as their pad author name.
 */
class provider implements \core_privacy\local\metadata\provider {
    public static function get_metadata(collection $collection): collection {
        $collection->add_external_location_link('etherpad', [
            'username' => 'privacy:metadata:etherpad:username',
            'fullname' => 'privacy:metadata:etherpad:fullname',
        ], 'privacy:metadata:etherpad');
        return $collection;
    }
}
