# Autoheal on Windows: the README's run command (make run) for PowerShell.
#   powershell -ExecutionPolicy Bypass -File deploy\windows\run.ps1 [-Port 9009]
# Creates .venv, installs the requirements, migrates the embedded SQLite database, loads the demo
# policy, makes a webhook token once (var\webhook-token) and serves web + worker on the port.
param([int]$Port = 9009)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

if (-not (Test-Path ".venv\Scripts\python.exe")) {
    $launcher = Get-Command py -ErrorAction SilentlyContinue
    if ($launcher) { & py -3.11 -m venv .venv } else { & python -m venv .venv }
    if ($LASTEXITCODE -ne 0) { throw "could not create .venv: install Python 3.11 from python.org" }
}
$python = ".venv\Scripts\python.exe"
& $python -m pip install --quiet --upgrade pip
& $python -m pip install --quiet -r requirements.txt
if ($LASTEXITCODE -ne 0) { throw "pip install failed" }
& $python manage.py migrate --noinput
if ($LASTEXITCODE -ne 0) { throw "migrate failed" }
& $python manage.py autoheal_policies import deploy\policies\demo.yaml --if-empty
if ($LASTEXITCODE -ne 0) { throw "policy import failed" }

if (-not $env:AUTOHEAL_WEBHOOK_TOKENS -and -not $env:AUTOHEAL_WEBHOOK_TOKENS_FILE) {
    $tokenFile = "var\webhook-token"
    if (-not (Test-Path $tokenFile) -or (Get-Item $tokenFile).Length -eq 0) {
        New-Item -ItemType Directory -Force -Path "var" | Out-Null
        & $python -c "import secrets; print(secrets.token_urlsafe(32))" | Set-Content -NoNewline -Encoding ascii $tokenFile
        # Only the current user may read the token.
        icacls $tokenFile /inheritance:r /grant:r "$($env:USERNAME):(R,W)" | Out-Null
        Write-Output "POST /alert token (kept in $tokenFile): $(Get-Content $tokenFile)"
    }
    $env:AUTOHEAL_WEBHOOK_TOKENS_FILE = (Resolve-Path $tokenFile).Path
}
& $python manage.py autoheal_run --port $Port
