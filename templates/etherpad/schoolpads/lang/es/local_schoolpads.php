<?php
// Managed by schoolctl.
defined('MOODLE_INTERNAL') || die();

$string['pluginname'] = 'Documentos compartidos de la escuela';
$string['pads'] = 'Documentos compartidos';
$string['intro'] = 'Documentos compartidos de este curso, en el Etherpad propio de la escuela. Todos los que ven el curso pueden leerlos y escribir en ellos.';
$string['nopads'] = 'Este curso aún no tiene documentos compartidos.';
$string['newpad'] = 'Documento nuevo';
$string['nopad'] = 'Este curso no tiene ningún documento con ese nombre.';
$string['notconfigured'] = 'El Etherpad de la escuela no está configurado.';
$string['apierror'] = 'El Etherpad de la escuela ha rechazado la petición: {$a}';
$string['schoolpads:view'] = 'Abrir los documentos compartidos del curso';
$string['schoolpads:create'] = 'Crear documentos compartidos en el curso';
$string['privacy:metadata:etherpad'] = 'Su nombre se muestra a los demás que escriben en el documento, en el servidor Etherpad propio de la escuela.';
$string['privacy:metadata:etherpad:username'] = 'Su nombre de usuario, que le vincula con su autor de Etherpad.';
$string['privacy:metadata:etherpad:fullname'] = 'Su nombre completo, que se muestra como autor de lo que escribe.';
