# Back up Autoheal (database, JSONL mirror, Prometheus snapshot when configured) on Windows.
#   powershell -File deploy\windows\backup.ps1 [-Root D:\autoheal-backups] [-Keep 14]
# Same as deploy\backup\backup.ps1, which does the work through manage.py autoheal_backup.
param(
    [string]$Root = $(if ($env:AUTOHEAL_BACKUP_ROOT) { $env:AUTOHEAL_BACKUP_ROOT } else { "var\backups" }),
    [int]$Keep = 14
)
& (Join-Path $PSScriptRoot "..\backup\backup.ps1") -Root $Root -Keep $Keep
exit $LASTEXITCODE
