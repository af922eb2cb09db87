# Back up Autoheal (database, JSONL mirror, Prometheus snapshot when configured) on Windows.
#   powershell -File deploy\windows\backup.ps1 [-Root D:\autoheal-backups] [-Keep 14]
# Same as deploy\backup\backup.ps1, which does the work through manage.py autoheal_backup.
& (Join-Path $PSScriptRoot "..\backup\backup.ps1") @args
exit $LASTEXITCODE
