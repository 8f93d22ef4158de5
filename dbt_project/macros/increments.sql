{#
  Incremental builds (tasks/warehouse/increments.py). Before dbt runs, the build-warehouse
  flow lists the lake's table files, takes every batch the warehouse has not built from
  yet and writes all files of those batches to internal.build_files (source build). On an
  incremental run:

  - a stage model reads only those files (raw_rows) and merges them with the rows it
    holds for the same keys (merge_with_existing), keeping per key the row a full build
    would keep: the order of its deduplication is total, so the winner of the old winner
    and the new rows is the winner of all rows;
  - a processed model rebuilds the keys whose stage row came from this build's batches
    (in_build).

  A full refresh (dbt build --full-refresh) reads every file of the lake.
#}

{# The raw rows a stage model reads: the whole table, or only this build's batches. #}
{% macro raw_rows(table) -%}
    {%- set relation = source('raw', table) -%}
    {%- if execute and is_incremental() -%}
        {{ adapter.dispatch('raw_rows', 'dicom_etl')(table, relation) }}
    {%- else -%}
        {{ relation }}
    {%- endif -%}
{%- endmacro %}

{# DuckDB reads the Parquet files in place: open only this build's files (and the table's 0-row schema file). #}
{% macro duckdb__raw_rows(table, relation) -%}
    {%- set lake = var('lake', env_var('DICOM_ETL_LAKE', '../data/lake')) -%}
    {%- set sql -%}
        select path from {{ source('build', 'build_files') }} where table_name = '{{ table }}' order by path
    {%- endset -%}
    {%- set paths = run_query(sql).columns[0].values() -%}
    read_parquet([
        {%- for path in paths %}'{{ lake }}/{{ path }}'{{ ', ' if not loop.last }}{% endfor -%}
    ], union_by_name = true)
{%- endmacro %}

{# Snowflake: the flow loaded this build's batches into RAW (delete + insert by batch). #}
{% macro default__raw_rows(table, relation) -%}
    (select * from {{ relation }} where {{ raw_column('batch_id') }} in {{ build_batches() }})
{%- endmacro %}

{# The batch ids of this build. #}
{% macro build_batches() -%}
    (select distinct batch_id from {{ source('build', 'build_files') }} where batch_id <> '')
{%- endmacro %}

{# A processed model's filter: the stage row `alias` came from this build's batches. #}
{% macro in_build(alias) -%}
    {{ alias }}.batch_id in {{ build_batches() }}
{%- endmacro %}

{#
  The stage rows of `relation` (a CTE of new rows) together with the rows this model
  already holds for the same keys, for deduplication over both. On a full build: only
  `relation`.
#}
{% macro merge_with_existing(relation, key) -%}
    select * from {{ relation }}
    {%- if is_incremental() %}
    union all
    select * from {{ this }}
    where {{ key }} in (select {{ key }} from {{ relation }})
    {%- endif %}
{%- endmacro %}

{# An image or series stage row to rebuild: its own row, or its study's (the patient, hence the date offset), came with this build. #}
{% macro study_in_build(alias) -%}
    ({{ in_build(alias) }} or {{ alias }}.study_instance_uid in (
        select changed_studies.study_instance_uid
        from {{ ref('stg_studies') }} as changed_studies
        where {{ in_build('changed_studies') }}
    ))
{%- endmacro %}

{#
  A row whose free-text descriptor holds a name part or ID that only this build brought
  (stg_phi_terms): Clean Descriptors must remove it now, as a full build would.
#}
{% macro descriptor_has_new_term(alias, entity) -%}
    {%- set descriptors = [] -%}
    {%- for r in deid_rules(entity) if r['action'] == 'C' and r['type'] not in ('DA', 'DT', 'TM', 'AS') -%}
        {%- do descriptors.append(r['stage_name']) -%}
    {%- endfor -%}
    {%- if descriptors -%}
    exists (
        select 1
        from {{ ref('stg_phi_terms') }} as new_terms
        where {{ in_build('new_terms') }}
            and (
                {%- for d in descriptors %}
                position(new_terms.term in upper({{ alias }}.{{ d }})) > 0{{ ' or' if not loop.last }}
                {%- endfor %}
            )
    )
    {%- else -%}
    false
    {%- endif -%}
{%- endmacro %}
