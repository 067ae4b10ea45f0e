<?php
// Managed by schoolctl: a small client of Etherpad's HTTP API (on loopback, key from config.php).
namespace local_schoolpads;

defined('MOODLE_INTERNAL') || die();

/**
 * Etherpad's HTTP API: groups per course, authors per person, sessions that open a group's pads.
 */
class etherpad {
    /** API version spoken (Etherpad 2.x). */
    const API = '1.3.0';

    /**
     * Calls one API function; returns its data, throws moodle_exception on any error.
     */
    public static function call(string $function, array $params = []): array {
        global $CFG;
        require_once($CFG->libdir . '/filelib.php');
        $config = get_config('local_schoolpads');
        if (empty($config->apiurl) || empty($config->apikey)) {
            throw new \moodle_exception('notconfigured', 'local_schoolpads');
        }
        // The API listens on loopback only; curl's security list would refuse it, so it is skipped for
        // this one fixed address (never a user-supplied one). POST keeps the key out of every log.
        $curl = new \curl(['ignoresecurity' => true]);
        $body = $curl->post(rtrim($config->apiurl, '/') . '/api/' . self::API . '/' . $function,
            ['apikey' => $config->apikey] + $params, ['CURLOPT_TIMEOUT' => 20, 'CURLOPT_PROXY' => '']);
        $reply = json_decode((string)$body, true);
        if (!is_array($reply) || ($reply['code'] ?? 1) !== 0) {
            $why = is_array($reply) ? (string)($reply['message'] ?? '') : 'no answer (' . $curl->error . ')';
            throw new \moodle_exception('apierror', 'local_schoolpads', '', $function . ': ' . $why);
        }
        return (array)($reply['data'] ?? []);
    }

    /** The Etherpad group of a course (created on first use). */
    public static function group(int $courseid): string {
        return self::call('createGroupIfNotExistsFor', ['groupMapper' => 'moodle-course-' . $courseid])['groupID'];
    }

    /** The Etherpad author of a person, named as Moodle shows them (the name is updated every time). */
    public static function author(\stdClass $user): string {
        return self::call('createAuthorIfNotExistsFor',
            ['authorMapper' => 'moodle-' . $user->username, 'name' => fullname($user)])['authorID'];
    }

    /** The pads of a group: pad id => pad name. */
    public static function pads(string $groupid): array {
        $pads = [];
        foreach (self::call('listPads', ['groupID' => $groupid])['padIDs'] ?? [] as $padid) {
            $pads[$padid] = substr($padid, strpos($padid, '$') + 1);
        }
        asort($pads, SORT_NATURAL | SORT_FLAG_CASE);
        return $pads;
    }

    /** A session of `$authorid` in `$groupid` until `$until` (unix time); returns the session id. */
    public static function session(string $groupid, string $authorid, int $until): string {
        return self::call('createSession',
            ['groupID' => $groupid, 'authorID' => $authorid, 'validUntil' => $until])['sessionID'];
    }
}
