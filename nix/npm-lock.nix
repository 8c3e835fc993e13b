# Gives every registry package in a package-lock.json its `resolved` tarball URL.
#
# npm leaves `resolved` out of the lockfile when it is configured with
# `omit-lockfile-registry-resolved` (this repository's lockfile is such a file). nixpkgs'
# importNpmLock fetches each package from `resolved`, pinned by its `integrity` hash, so the URLs
# are restored here from the registry's fixed layout:
#   https://registry.npmjs.org/NAME/-/BASENAME-VERSION.tgz   (BASENAME: NAME without its @scope/)
# Entries that are not registry tarballs (the root, links, bundled packages, entries that already
# say where they come from) are left as they are.
{ lib }:

{
  lockfile,
  registry ? "https://registry.npmjs.org",
}:

let
  # "node_modules/a/node_modules/@s/b" -> "@s/b"; an aliased entry carries its real name.
  nameOf = path: module: module.name or (lib.last (lib.splitString "node_modules/" path));

  tarballUrl =
    name: version: "${registry}/${name}/-/${lib.last (lib.splitString "/" name)}-${version}.tgz";

  isRegistryPackage =
    path: module:
    path != ""
    && !(module ? resolved)
    && !(module.link or false)
    && !(module.inBundle or false)
    && module ? version
    && module ? integrity;

  withResolved =
    path: module:
    if isRegistryPackage path module then
      module // { resolved = tarballUrl (nameOf path module) module.version; }
    else
      module;
in
lockfile // { packages = lib.mapAttrs withResolved lockfile.packages; }
