<?php
// Managed by schoolctl.
defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'Documents compartits de l\'escola';
$string['pads'] = 'Documents compartits';
$string['intro'] = 'Documents compartits d\'aquest curs, a l\'Etherpad propi de l\'escola. Tothom qui veu el curs els pot llegir i escriure.';
$string['nopads'] = 'Aquest curs encara no té cap document compartit.';
$string['newpad'] = 'Document nou';
$string['nopad'] = 'Aquest curs no té cap document amb aquest nom.';
$string['notconfigured'] = 'L\'Etherpad de l\'escola no està configurat.';
$string['apierror'] = 'L\'Etherpad de l\'escola ha refusat la petició: {$a}';
$string['schoolpads:view'] = 'Obrir els documents compartits del curs';
$string['schoolpads:create'] = 'Crear documents compartits al curs';
$string['privacy:metadata:etherpad'] = 'El vostre nom es mostra als altres que escriuen al document, al servidor Etherpad propi de l\'escola.';
$string['privacy:metadata:etherpad:username'] = 'El vostre nom d\'usuari, que us vincula amb el vostre autor d\'Etherpad.';
$string['privacy:metadata:etherpad:fullname'] = 'El vostre nom complet, que es mostra com a autor del que escriviu.';
