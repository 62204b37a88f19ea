"""Java and the jar cache: the broker and Connect run from jars Maven resolves from Central."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable
from ragstream.settings import Settings
from infra.service import StackError


KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J = KAFKA_DIR / "log4j2.properties"
TOOLS_LOG4J = KAFKA_DIR / "tools-log4j2.properties"
MIN_JAVA = 17
DEPENDENCY_PLUGIN = "3.8.1"  # keep in step with infra/kafka/pom.xml

_NETWORK_ERRORS = re.compile(
    r"Could not transfer|Connection refused|UnknownHost|Unknown host|Connect to .* failed|"
    r"Network is unreachable|timed out|Could not resolve|No route to host|Remote host terminated",
    re.IGNORECASE,
)



# --------------------------------------------------------------------------------------
# Tools: Java and the jar cache
# --------------------------------------------------------------------------------------

def find_java(settings: Settings) -> str:
    java = shutil.which(settings.java)
    if java is None:
        raise StackError(
            f"Java was not found (RAGSTREAM_JAVA={settings.java!r}); the Kafka broker needs Java {MIN_JAVA}+.",
            "Install it (apt-get install -y openjdk-17-jre-headless) or point RAGSTREAM_JAVA at a java executable.",
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"{java} -version failed: {exc}", "Check the Java installation or RAGSTREAM_JAVA.") from None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise StackError(
            f"{java} is Java {major or 'of unknown version'}; Kafka 4 needs Java {MIN_JAVA} or newer.",
            "Install openjdk-17-jre-headless or point RAGSTREAM_JAVA at a newer java.",
        )
    return java


def jars(settings: Settings, profile: str = "broker", progress: Callable[[str], None] = lambda _m: None,
         pom: Path = POM) -> Path:
    """Return a folder holding every jar of ``profile`` of ``pom`` (default infra/kafka/pom.xml), resolving once.

    The folder name carries a hash of the POM, so editing the POM resolves afresh.
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
    target = settings.cache_dir / "jars" / f"{profile}-{digest}"
    if (target / ".complete").exists():
        return target
    mvn = shutil.which(settings.mvn)
    if mvn is None:
        raise StackError(
            f"Maven was not found (RAGSTREAM_MVN={settings.mvn!r}); it resolves the Kafka jars from Maven Central.",
            "Install it (apt-get install -y maven) or point RAGSTREAM_MVN at an mvn executable.",
        )
    progress(f"resolving {profile} jars from Maven Central (once; cached in {target.parent})")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    # Full plugin coordinates: with a prefix, an unreachable repository shows up as
    # "No plugin found for prefix" instead of the network error it is.
    cmd = [mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom), f"-P{profile}",
           f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN}:copy-dependencies",
           f"-DoutputDirectory={staging}"]
    if settings.maven_repo_url:
        mirror = settings.cache_dir / "maven-mirror-settings.xml"
        mirror.parent.mkdir(parents=True, exist_ok=True)
        mirror.write_text(
            "<settings><mirrors><mirror><id>ragstream-mirror</id><mirrorOf>*</mirrorOf>"
            f"<url>{settings.maven_repo_url}</url></mirror></mirrors></settings>\n"
        )
        cmd[1:1] = ["-s", str(mirror)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        raise StackError("Maven did not finish resolving the Kafka jars within 30 minutes.",
                         "Check the network to Maven Central (or RAGSTREAM_MAVEN_REPO_URL) and retry.") from None
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        tail = "\n".join(output.splitlines()[-8:])
        if _NETWORK_ERRORS.search(output):
            where = settings.maven_repo_url or "Maven Central (https://repo.maven.apache.org)"
            raise StackError(
                f"Maven could not download the {profile} jars from {where}:\n{tail}",
                "Check the network and any proxy in ~/.m2/settings.xml, or set RAGSTREAM_MAVEN_REPO_URL "
                "to a reachable mirror; then run `ragstream stack up` again.",
            )
        raise StackError(f"Maven failed to resolve the {profile} jars:\n{tail}",
                         f"Run the command yourself to see the full output: {' '.join(cmd)}")
    (staging / ".complete").write_text(" ".join(sorted(p.name for p in staging.glob("*.jar"))))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def java_tool(settings: Settings, main_class: str, args: list[str], *, timeout: float = 120,
              profile: str = "broker") -> subprocess.CompletedProcess[str]:
    """Run one of Kafka's Java tools (e.g. ``org.apache.kafka.tools.consumer.ConsoleConsumer``)
    from the same jars as the broker; its stdout is the tool's output, logs go to stderr."""
    cmd = [find_java(settings), "-Xmx256m", f"-Dlog4j2.configurationFile={TOOLS_LOG4J}",
           "-cp", f"{jars(settings, profile)}/*", main_class, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
