# The Switchboard image: nothing but the statically linked binary, so it builds with no registry.
# Build it with scripts/images.sh, which compiles the binary (crt-static) and stages it under
# target/docker/router/ (the only part of the repository the .dockerignore lets in).
#
# Routers:          switchboard serve --node-id 1 --data-dir /data ...
# Sample services:  switchboard sample --routers http://lb:8081 ...
FROM scratch
COPY target/docker/router/usr/ /usr/
# The data directory belongs to the unprivileged user the image runs as; a named volume mounted
# here starts with this owner.
COPY --chown=65532:65532 target/docker/router/data/ /data/
USER 65532:65532
EXPOSE 8080 8081 8082
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["--help"]
