#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# test_docs -- the manual pages and the bash completion keep up with the code: every key of
# mimed's config table (daemon/config.c) is in mimed.yaml(5) and conf/mimed.yaml, every
# mimectl command and each of its long options (from its --help) is in mimectl(1) and in
# the completion, and groff renders the pages without warnings.
# Environment: MIMECTL names the built client. Stdlib only.
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))
MIMECTL = os.path.abspath(os.environ.get('MIMECTL', 'build/client/mimectl'))


def read(rel):
    with open(os.path.join(ROOT, rel)) as f:
        return f.read()


def roff_text(text):
    """The words of a troff page with its escapes undone (\\- -> -)."""
    return text.replace('\\-', '-').replace('\\(dq', '"')


def main():
    failures = []
    config_c = read('daemon/config.c')
    keys = re.findall(r'^\s*\{"([a-z_.]+)", KEY_[A-Z_]+,', config_c, re.M)
    assert len(keys) > 15, keys
    yaml5 = roff_text(read('docs/man/mimed.yaml.5'))
    conf = read('conf/mimed.yaml')
    for k in keys:
        if not re.search(r'^\.BR %s ' % re.escape(k), yaml5, re.M):
            failures.append('mimed.yaml.5 does not describe key %s' % k)
        if not re.search(r'^#? *%s:' % re.escape(k.split('.')[-1]), conf, re.M):
            failures.append('conf/mimed.yaml does not list key %s' % k)

    mimectl_c = read('client/mimectl.c')
    commands = re.findall(r'\{"([a-z]+)", mimectl_cmd_', mimectl_c)
    assert 'bench' in commands, commands
    man1 = roff_text(read('docs/man/mimectl.1'))
    completion = read('docs/completion/mimectl.bash')
    listed = re.search(r"local commands='([^']*)'", completion).group(1).split()
    if sorted(listed) != sorted(commands):
        failures.append('completion commands %s != mimectl %s' % (listed, commands))
    case_opts = {}  # the completion's "\tinfer | bench) opts='...' ;;" lines
    for pattern, opts in re.findall(r"^\t([a-z |]+)\) opts='([^']*)'", completion, re.M):
        for name in pattern.split('|'):
            case_opts[name.strip()] = opts.split()
    for cmd in commands:
        if not re.search(r'^\.B mimectl %s\b' % cmd, man1, re.M):
            failures.append('mimectl.1 SYNOPSIS lacks %s' % cmd)
        if not re.search(r'^\.TP\n\.B %s$' % cmd, man1, re.M):
            failures.append('mimectl.1 COMMANDS lacks %s' % cmd)
        p = subprocess.run([MIMECTL, cmd, '--help'], capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.startswith('usage: mimectl ' + cmd):
            failures.append('mimectl %s --help: exit %d, %r' % (cmd, p.returncode,
                                                               p.stdout[:80]))
        opts = case_opts.get(cmd, [])
        if not opts:
            failures.append('completion has no options for %s' % cmd)
        usage = p.stdout.split('\n\n')[0]
        for opt in set(re.findall(r'--[a-z][a-z-]*', usage)):
            if opt not in opts:
                failures.append('completion of %s lacks %s' % (cmd, opt))
            if opt not in man1:
                failures.append('mimectl.1 lacks %s' % opt)

    groff = shutil.which('groff')
    for page in ('mimed.8', 'mimectl.1', 'mimed.yaml.5'):
        if not groff:
            print('skip groff check: no groff')
            break
        p = subprocess.run([groff, '-man', '-ww', '-z', os.path.join(ROOT, 'docs', 'man', page)],
                           capture_output=True, text=True)
        if p.returncode != 0 or p.stderr:
            failures.append('groff %s: %s' % (page, p.stderr.strip()))
    bash = shutil.which('bash')
    if bash:
        p = subprocess.run([bash, '-n', os.path.join(ROOT, 'docs', 'completion', 'mimectl.bash')],
                           capture_output=True, text=True)
        if p.returncode != 0:
            failures.append('bash -n mimectl.bash: %s' % p.stderr)

    for f in failures:
        print('FAIL', f)
    print('%d keys, %d commands checked; %d failures' % (len(keys), len(commands),
                                                         len(failures)))
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
